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
