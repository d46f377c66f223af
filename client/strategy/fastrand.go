package strategy

import _ "unsafe" // for go:linkname

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
