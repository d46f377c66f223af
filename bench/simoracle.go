package bench

// pickOracle is the oracle strategy: one central dispatcher that sees every
// pod's requests in flight (queued and in service) the moment they change
// and joins the shortest queue relative to capacity, ties broken at random.
// No client-side policy has this knowledge, so its latencies and pod counts
// are the limit the others are measured against. It knows queues, not
// outcomes: a pod that fails requests at once looks idle to it.
func (s *sim) pickOracle(ch *simChannel) int {
	best, ties := -1, 0
	var bestLoad float64
	for _, p := range s.live {
		pod := s.pods[p]
		l := float64(pod.inflight) / float64(pod.spec.Capacity)
		switch {
		case best < 0 || l < bestLoad:
			best, bestLoad, ties = p, l, 1
		case l == bestLoad:
			ties++
			if ch.rng.IntN(ties) == 0 {
				best = p
			}
		}
	}
	return best
}
