package xdsserver

// WithPushHook makes the push goroutine call f before each push (tests
// block it there to stall the push loop).
func WithPushHook(f func()) Option { return func(o *options) { o.pushHook = f } }
