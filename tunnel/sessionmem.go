package tunnel

import (
	"io"

	"github.com/hashicorp/yamux"
)

// What an idle agent session costs the server is what 10,000 of them cost
// a replica (BENCHMARKS.md, issue 18). The server's side of a session is
// trimmed where it does not serve: agents never open streams.

// serverAcceptBacklog is how many agent-opened streams may wait, refused
// one by one, on the server: yamux allocates the backlog per session (an
// 8 KiB channel at muxConfig's 1,024), and only the agent accepts streams
// in bulk.
const serverAcceptBacklog = 8

// agentSessionConfig is muxConfig for the server's end of an agent session.
func agentSessionConfig(logOut io.Writer) *yamux.Config {
	c := muxConfig(logOut)
	c.AcceptBacklog = serverAcceptBacklog
	return c
}

// refuseStreams closes every stream the agent opens until the session
// ends: agents never open streams, and refused ones cannot pile up. It
// runs on the session's own goroutine rather than one more per session.
func refuseStreams(mux *yamux.Session) {
	for {
		st, err := mux.Accept()
		if err != nil {
			return
		}
		_ = st.Close()
	}
}
