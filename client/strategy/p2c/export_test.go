package p2c

import (
	"time"

	"github.com/fairway-lb/fairway/client/strategy"
)

// StaleState and Decay expose Tick's per-endpoint step to the tests.
type StaleState = staleState

// Decay runs one tick's step of st for e.
func (st *StaleState) Decay(e *strategy.Endpoint, ref time.Duration, idle uint32, fraction, penalty, maxOver float64) bool {
	return st.decay(e, ref, idle, fraction, penalty, maxOver)
}
