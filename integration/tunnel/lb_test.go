package tunnel

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// failoverLB is the one address kube-apiserver's egress selector names,
// in front of the server replicas, as a Service or cloud load balancer
// would be in a cluster. It is plain L4 (TLS stays end to end between
// kube-apiserver and a replica) and sends each new connection to the first
// replica that accepts it, in order: so while replica A lives it gets the
// API server's traffic, and once A is gone every new connection lands on
// B. A connection in flight on a dying replica fails, as it would behind a
// real load balancer.
type failoverLB struct {
	l        net.Listener
	backends []string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newFailoverLB(t *testing.T, backends ...string) *failoverLB {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &failoverLB{l: l, backends: backends, conns: map[net.Conn]struct{}{}}
	lb.wg.Add(1)
	go lb.serve()
	t.Cleanup(lb.close)
	return lb
}

func (lb *failoverLB) addr() string { return lb.l.Addr().String() }

func (lb *failoverLB) serve() {
	defer lb.wg.Done()
	for {
		c, err := lb.l.Accept()
		if err != nil {
			return
		}
		lb.wg.Add(1)
		go func() {
			defer lb.wg.Done()
			lb.forward(c)
		}()
	}
}

func (lb *failoverLB) forward(c net.Conn) {
	defer c.Close()
	var up net.Conn
	for _, b := range lb.backends {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var err error
		up, err = (&net.Dialer{}).DialContext(ctx, "tcp", b)
		cancel()
		if err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !lb.track(c, up) {
		return
	}
	defer lb.untrack(c, up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); _ = c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (lb *failoverLB) track(cs ...net.Conn) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.conns == nil {
		return false
	}
	for _, c := range cs {
		lb.conns[c] = struct{}{}
	}
	return true
}

func (lb *failoverLB) untrack(cs ...net.Conn) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, c := range cs {
		delete(lb.conns, c)
	}
}

func (lb *failoverLB) close() {
	_ = lb.l.Close()
	lb.mu.Lock()
	for c := range lb.conns {
		_ = c.Close()
	}
	lb.conns = nil
	lb.mu.Unlock()
	lb.wg.Wait()
}
