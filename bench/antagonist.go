package bench

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/fairway-lb/fairway/bench/backend"
)

// Antagonist slows pods down at random, as a noisy neighbour sharing their
// machines would (the antagonists of Prequal's testbed): each pod on its own
// alternates between normal and slowed periods of exponentially distributed
// lengths, slowed each time by a factor drawn uniformly from
// [MinFactor, MaxFactor]. The periods are drawn from Config.Seed, so every
// strategy of a run, real or simulated, meets the same ones.
type Antagonist struct {
	MinFactor, MaxFactor float64
	// Busy is the long-run fraction of time a pod is slowed (0 < Busy < 1).
	Busy float64
	// MeanSlow is the mean length of a slowed period; normal periods average
	// MeanSlow × (1-Busy)/Busy.
	MeanSlow time.Duration
}

func (a *Antagonist) validate() error {
	if a.MinFactor < 1 || a.MaxFactor < a.MinFactor || a.Busy <= 0 || a.Busy >= 1 || a.MeanSlow <= 0 {
		return errors.New("antagonist: want 1 ≤ min factor ≤ max factor, 0 < busy < 1 and a positive mean slow period")
	}
	return nil
}

// slowdowns returns each of n pods' slowed periods over run, drawn from
// seed; nil when a is nil.
func (a *Antagonist) slowdowns(seed uint64, n int, run time.Duration) [][]backend.Slowdown {
	if a == nil {
		return nil
	}
	out := make([][]backend.Slowdown, n)
	meanNormal := float64(a.MeanSlow) * (1 - a.Busy) / a.Busy
	for p := range out {
		rng := rand.New(rand.NewPCG(seed, 0xa9a0+uint64(p)))
		slowed := rng.Float64() < a.Busy // the state at the start, in the long-run proportion
		for t := time.Duration(0); t < run; {
			mean := meanNormal
			if slowed {
				mean = float64(a.MeanSlow)
			}
			d := time.Duration(rng.ExpFloat64() * mean)
			if slowed {
				f := a.MinFactor + rng.Float64()*(a.MaxFactor-a.MinFactor)
				out[p] = append(out[p], backend.Slowdown{From: t, To: min(t+d, run), Factor: f})
			}
			t += d
			slowed = !slowed
		}
	}
	return out
}
