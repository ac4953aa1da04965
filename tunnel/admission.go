package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

// Admission of agent connections, for a reconnect storm (every agent of a
// restarted replica dialing back at once): at most MaxHandshakes TLS
// handshakes run at a time, at most MaxHandshakeQueue more connections
// wait for one, and every connection beyond that is deferred: told to come
// back later (an appointment at the rate handshakes finish, at least
// RetryAfter; the agent adds jitter), never dropped for good.
// Handshakes are what a storm costs (a session, once up, costs memory
// only), so bounding them leaves CPU to the connected nodes' traffic.
//
// The deferral is sent before TLS, so it costs the server no cryptography:
// five bytes whose first is not a TLS record type, which an agent's TLS
// client reports as a tls.RecordHeaderError carrying exactly those five
// bytes. It is not authenticated; an agent honours at most its own
// MaxBackoff, so a forged deferral delays it no more than a dropped
// connection would.

// deferMagic opens a deferral; the three bytes after it are the delay in
// milliseconds (big-endian). 'v' is no TLS record type (20-24).
var deferMagic = [2]byte{'v', 'r'}

// maxDeferral is the longest delay three bytes of milliseconds carry.
const maxDeferral = (1<<24 - 1) * time.Millisecond

func encodeDeferral(d time.Duration) [5]byte {
	ms := min(max(d, 0), maxDeferral).Milliseconds()
	var b [5]byte
	copy(b[:2], deferMagic[:])
	b[2], b[3], b[4] = byte(ms>>16), byte(ms>>8), byte(ms)
	return b
}

// decodeDeferral reads a deferral from the first five bytes the server
// sent; false if they are something else.
func decodeDeferral(b [5]byte) (time.Duration, bool) {
	if b[0] != deferMagic[0] || b[1] != deferMagic[1] {
		return 0, false
	}
	ms := binary.BigEndian.Uint32([]byte{0, b[2], b[3], b[4]})
	return time.Duration(ms) * time.Millisecond, true
}

// DeferredError is a connection attempt the server deferred: the agent
// retries after RetryAfter (plus jitter), without counting a failure.
type DeferredError struct{ RetryAfter time.Duration }

func (e *DeferredError) Error() string {
	return "the tunnel server is busy and deferred this session: retry after " + e.RetryAfter.String()
}

// deferralOf finds a server's deferral in a failed TLS handshake.
func deferralOf(err error) (*DeferredError, bool) {
	var rh tls.RecordHeaderError
	if !errors.As(err, &rh) {
		return nil, false
	}
	d, ok := decodeDeferral(rh.RecordHeader)
	if !ok {
		return nil, false
	}
	return &DeferredError{RetryAfter: d}, true
}

// deferredWait is how long an agent waits after err if it is a deferral:
// the server's delay plus up to a quarter more, so that agents deferred
// together do not come back in lock step, and never longer than the
// agent's own longest backoff. A deferral is no failure: it does not
// lengthen later backoffs.
func deferredWait(err error, maxBackoff time.Duration) (time.Duration, bool) {
	var d *DeferredError
	if !errors.As(err, &d) {
		return 0, false
	}
	wait := max(d.RetryAfter, 0)
	wait += rand.N(wait/4 + 1)
	if maxBackoff > 0 {
		wait = min(wait, maxBackoff)
	}
	return wait, true
}

// admission counts agent connections between accept and the end of their
// TLS handshake.
type admission struct {
	slots chan struct{} // one per running handshake
	stop  chan struct{} // closed by Server.Close: waiting ends
	once  sync.Once

	mu       sync.Mutex
	admitted int // running a handshake or waiting for a slot
	limit    int // slots plus queue

	// Deferred agents get appointments: one handshake time apart, after
	// the admitted ones, so that they come back about when the server
	// can take them rather than all at once to be deferred again. The
	// pace is Little's law over the slots: slots / the time a handshake
	// takes (smoothed), which is the server's capacity while the slots
	// are all busy, as they are in a storm, and a harmless overestimate
	// otherwise. It holds for agents a round trip away as on loopback.
	handshake time.Duration // smoothed duration of a handshake (0: none yet)
	next      time.Time     // the latest appointment given
}

// Appointments reach at most maxAppointment ahead, below the agents'
// default MaxBackoff (30s): an agent capped by its own backoff would come
// back before a later turn, and the turns given to it would pile up. Until
// a handshake has been timed, one is guessed to take guessedHandshake.
const (
	maxAppointment   = 10 * time.Second
	guessedHandshake = 100 * time.Millisecond
)

func newAdmission(handshakes, queue int) *admission {
	return &admission{slots: make(chan struct{}, handshakes), stop: make(chan struct{}), limit: handshakes + queue}
}

// enter admits a new connection, or says to defer it.
func (a *admission) enter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.admitted >= a.limit {
		return false
	}
	a.admitted++
	return true
}

// leave ends an admitted connection's handshake phase (after release, if
// it took a slot).
func (a *admission) leave() {
	a.mu.Lock()
	a.admitted--
	a.mu.Unlock()
}

// finished times a handshake that took d.
func (a *admission) finished(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.handshake == 0 {
		a.handshake = d
		return
	}
	a.handshake = (7*a.handshake + d) / 8
}

// appointment is the delay a connection deferred at now is told: its turn
// after the admitted connections and every earlier appointment, at least
// least and at most maxAppointment.
func (a *admission) appointment(now time.Time, least time.Duration) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := a.handshake
	if hs == 0 {
		hs = guessedHandshake
	}
	per := hs / time.Duration(cap(a.slots)) // one turn
	first := now.Add(time.Duration(a.admitted) * per)
	if a.next.Before(first) {
		a.next = first
	}
	a.next = a.next.Add(per)
	if horizon := now.Add(maxAppointment); a.next.After(horizon) {
		a.next = horizon
	}
	return max(a.next.Sub(now), least)
}

// acquire waits for a handshake slot; release gives it back.
func (a *admission) acquire(ctx context.Context) error {
	select {
	case a.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-a.stop:
		return net.ErrClosed
	}
}

func (a *admission) release() { <-a.slots }

// close ends every wait for a slot (the server is closing).
func (a *admission) close() { a.once.Do(func() { close(a.stop) }) }

// handshake runs an admitted connection's TLS handshake in a slot, within
// HandshakeTimeout. A connection that waited half of that for a slot is
// deferred instead (deferred true): its agent may give up soon, and a
// handshake with a gone peer is wasted.
func (s *Server) handshake(c *tls.Conn) (deferred bool, err error) {
	defer s.adm.leave()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	defer cancel()
	wctx, wcancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout/2)
	err = s.adm.acquire(wctx)
	wcancel()
	if err != nil {
		s.deferConn(c.NetConn(), "deferred")
		return true, err
	}
	defer s.adm.release()
	start := time.Now()
	err = c.HandshakeContext(ctx)
	s.adm.finished(time.Since(start))
	return false, err
}

// deferConn tells a connection's agent when to come back (its
// appointment, at least RetryAfter) and closes it.
func (s *Server) deferConn(raw net.Conn, reason string) {
	s.cfg.Metrics.AgentRejected.WithLabelValues(reason).Inc()
	b := encodeDeferral(s.adm.appointment(time.Now(), s.cfg.RetryAfter))
	_ = raw.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = raw.Write(b[:])
	_ = raw.Close()
}

// retryAfterSeconds is the Retry-After of a 503: RetryAfter, whole seconds,
// at least one.
func (s *Server) retryAfterSeconds() string {
	return strconv.Itoa(max(1, int((s.cfg.RetryAfter+time.Second-1)/time.Second)))
}

// admissionDefaults fills the admission settings of cfg.
func admissionDefaults(cfg *ServerConfig) {
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 64
	}
	if cfg.MaxHandshakeQueue < 0 {
		cfg.MaxHandshakeQueue = 0
	} else if cfg.MaxHandshakeQueue == 0 {
		cfg.MaxHandshakeQueue = 1024
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 2 * time.Second
	}
}
