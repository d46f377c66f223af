package strategy

import (
	"math"
	"math/bits"
	_ "unsafe" // for go:linkname
)

// cheaprand is the runtime's per-M wyrand generator: lock-free, a few
// instructions, not cryptographic. The runtime keeps it linkable for the
// many packages that use it ("Do not remove or change the type signature").
//
//go:linkname cheaprand runtime.cheaprand
func cheaprand() uint32

// FastRand returns 64 random bits from the runtime's per-M generator. It is
// the default BuildOptions.Rand: safe for concurrent use without locks, and
// several times cheaper than math/rand/v2's ChaCha8-based Uint64, which
// matters on a pick path of a few tens of nanoseconds.
func FastRand() uint64 { return uint64(cheaprand())<<32 | uint64(cheaprand()) }

// FastRand32 returns 32 random bits from the same generator: one call, half
// the cost of FastRand. It is the default BuildOptions.Rand32. It is the
// runtime's function itself, so that a func value of it calls the
// generator directly.
//
//go:linkname FastRand32 runtime.cheaprand
func FastRand32() uint32

// Index maps a random value r to [0, n) (Lemire's multiply-shift; the bias
// is below n/2^64).
func Index(r uint64, n int) int {
	hi, _ := bits.Mul64(r, uint64(n))
	return int(hi)
}

// Index32 maps the 32-bit value r to [0, n).
func Index32(r uint32, n int) int {
	return int((uint64(r) * uint64(n)) >> 32)
}

// Threshold converts a probability p in [0,1] into a uint64 such that
// r < Threshold(p) has probability p for uniform r.
func Threshold(p float64) uint64 {
	switch {
	case p <= 0:
		return 0
	case p >= 1:
		return math.MaxUint64
	}
	return uint64(p * (1 << 63) * 2)
}
