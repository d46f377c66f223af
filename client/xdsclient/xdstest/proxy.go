package xdstest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy on loopback in front of a server that can be made to
// hang as a replica does that keeps its sockets open but stops answering:
// after Hang it forwards nothing more in either direction and holds every
// connection, old and new, open without a word.
type Proxy struct {
	Addr string

	target string
	lis    net.Listener
	hung   chan struct{} // closed by Hang
	done   chan struct{} // closed by Stop
	wg     sync.WaitGroup
	once   sync.Once
	hang   sync.Once

	mu    sync.Mutex
	conns []net.Conn // guarded by mu
}

// StartProxy starts a proxy to target ("host:port") on a free loopback
// port; it stops at the end of the test.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("xdstest: proxy listen: %v", err)
	}
	p := &Proxy{Addr: lis.Addr().String(), target: target, lis: lis, hung: make(chan struct{}), done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Stop)
	return p
}

// Hang stops forwarding: bytes read from now on are dropped, nothing is
// written, no connection is closed, new ones are accepted and left silent.
func (p *Proxy) Hang() { p.hang.Do(func() { close(p.hung) }) }

// Stop closes the listener and every connection and waits for the proxy's
// goroutines. Idempotent.
func (p *Proxy) Stop() {
	p.once.Do(func() {
		close(p.done)
		p.lis.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		select {
		case <-p.hung:
			continue // accepted, never answered
		default:
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil || !p.track(out) {
			in.Close()
			continue
		}
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// track records c to be closed by Stop; false (and c closed) after Stop.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		c.Close()
		return false
	default:
	}
	p.conns = append(p.conns, c)
	return true
}

// pipe copies src to dst until either fails or the proxy hangs; after a
// hang it holds both open until Stop.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.hung:
			<-p.done
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if errors.Is(err, io.EOF) {
			// Pass the half-close on, as a real peer's FIN would be.
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}
