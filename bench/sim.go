package bench

import (
	"errors"
	"time"
)

func simulate(cfg Config, strategy string, sched []arrival, zones []string, run time.Duration) (*Result, error) {
	return nil, errors.New("sim: not yet")
}
