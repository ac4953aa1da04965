package tunnel

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// The server's one keepalive loop closes a session whose agent no longer
// answers and leaves a live one alone.
func TestKeeperClosesSessionsThatDoNotAnswer(t *testing.T) {
	e := newEnv(t, loopNode("live"), Ports{})
	cfg := agentSessionConfig(testDiscard{})
	cfg.ConnectionWriteTimeout = 200 * time.Millisecond
	open := func(node string, answer bool) *yamux.Session {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		mux, err := yamux.Server(a, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if answer {
			peer, err := yamux.Client(b, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = peer.Close() })
		} // else: nobody reads b, as with an agent whose path died
		e.srv.reg.add(&session{key: sessionKey{node: node, identity: "system:vnode:"}, mux: mux})
		return mux
	}
	live, dead := open("live", true), open("dead", false)
	e.srv.pingAll()
	if !dead.IsClosed() {
		t.Fatal("a session that did not answer its keepalive is still open")
	}
	if live.IsClosed() {
		t.Fatal("a live session was closed by the keepalive")
	}
}

type testDiscard struct{}

func (testDiscard) Write(b []byte) (int, error) { return len(b), nil }

// With no goroutine of the server waiting on a session, its end still
// unregisters it (the connection's close runs endSession).
func TestEndedSessionIsUnregistered(t *testing.T) {
	e := newEnv(t, loopNode("n1"), Ports{})
	_, stop := e.startAgent(e.ca.pair(t, "system:vnode:n1", "system:vnodes"))
	e.waitSession("n1")
	stop()
	waitFor(t, 10*time.Second, "n1's session unregistered", func() bool { return !e.srv.HasSession("n1") })
	if n := len(e.srv.reg.all()); n != 0 {
		t.Fatalf("%d sessions left registered", n)
	}
}

// A stream an agent opens is refused by the keeper's sweep.
func TestKeeperRefusesAgentStreams(t *testing.T) {
	e := newEnv(t, loopNode("n1"), Ports{})
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	mux, err := yamux.Server(a, agentSessionConfig(testDiscard{}))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := yamux.Client(b, agentSessionConfig(testDiscard{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	e.srv.reg.add(&session{key: sessionKey{node: "n1", identity: "system:vnode:"}, mux: mux})
	st, err := peer.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("x")); err != nil { // the SYN reaches the server
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the stream waiting on the server", func() bool { return mux.NumStreams() == 1 })
	read := make(chan error, 1)
	go func() { _, err := st.Read(make([]byte, 1)); read <- err }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		e.srv.pingAll() // a sweep may lose the race to its expired context; the next takes the stream
		select {
		case err := <-read:
			if err == nil {
				t.Fatal("the agent's stream was answered, not closed")
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent's stream was not closed")
		}
	}
}
