package strategy_test

import (
	"math/rand/v2"
	"testing"

	"github.com/fairway-lb/fairway/client/strategy"
)

var sink uint64

func BenchmarkRand(b *testing.B) {
	for _, tc := range []struct {
		name string
		f    func() uint64
	}{
		{"FastRand", strategy.FastRand},
		{"FastRand32", func() uint64 { return uint64(strategy.FastRand32()) }},
		{"math_rand_v2_Uint64", rand.Uint64},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var s uint64
			for b.Loop() {
				s += tc.f()
			}
			sink = s
		})
	}
}

func TestFastRand_CoversBothHalves(t *testing.T) {
	var hi, lo uint64
	for range 64 {
		r := strategy.FastRand()
		hi |= r >> 32
		lo |= r & 0xffffffff
	}
	if hi != 0xffffffff || lo != 0xffffffff {
		t.Errorf("FastRand bits seen: high %x low %x, want all set", hi, lo)
	}
}

func TestFastRand32_CoversAllBits(t *testing.T) {
	var seen uint32
	for range 64 {
		seen |= strategy.FastRand32()
	}
	if seen != 0xffffffff {
		t.Errorf("FastRand32 bits seen: %x, want all set", seen)
	}
}
