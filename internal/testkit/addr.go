package testkit

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback "127.0.0.1:PORT" with nothing listening on it:
// a port the kernel just handed out and that was released at once. Use it for
// an address that refuses connections, or for a server the test starts later
// (another process may take the port in between, rarely).
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
