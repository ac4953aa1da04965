package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	stateFile    = "state.json"
	stateVersion = 1
	// minSnapshotInterval is the shortest time between two saves: a burst
	// of calls costs one write, and a crash loses at most this much.
	minSnapshotInterval = 200 * time.Millisecond
)

// stateHeader is state.json without its groups.
type stateHeader struct {
	Version      int                     `json:"Version"`
	Region       string                  `json:"Region"`
	SavedAt      time.Time               `json:"SavedAt"`
	Seq          int                     `json:"Seq"`
	Tokens       map[string]*tokenRecord `json:"Tokens"`
	VirtualNodes json.RawMessage         `json:"VirtualNodes"`
	ImageCaches  json.RawMessage         `json:"ImageCaches"`
}

// savedState is the whole of state.json, as read back.
type savedState struct {
	Version      int                     `json:"Version"`
	Region       string                  `json:"Region"`
	Seq          int                     `json:"Seq"`
	Tokens       map[string]*tokenRecord `json:"Tokens"`
	VirtualNodes []*virtualNode          `json:"VirtualNodes"`
	ImageCaches  []*imageCache           `json:"ImageCaches"`
	Groups       []groupRecord           `json:"Groups"`
}

// groupRecord is a group as saved: its DescribeContainerGroups shape and
// what the API does not show.
type groupRecord struct {
	Group       *group               `json:"Group"`
	ClientToken string               `json:"ClientToken,omitempty"`
	Created     time.Time            `json:"Created"`
	Credentials []registryCredential `json:"Credentials,omitempty"`
	Pending     *groupUpdate         `json:"Pending,omitempty"`
}

// persister saves the emulator's state to DataDir/state.json, replacing
// the file atomically (temporary file, fsync, rename) with mode 0600.
// Saves are batched: a change asks for one (kick), and the saver writes
// at most once per interval, so 10,000 sim groups created in a burst cost
// a few writes, not 10,000. Each group's JSON is kept between saves and
// redone only when the group changed, so a save holds the emulator's lock
// only to encode what changed.
type persister struct {
	path string
	log  logrus.FieldLogger
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	// writeMu orders saves, so an older snapshot never replaces a newer.
	writeMu sync.Mutex

	// Under Emulator.mu:
	dirty map[string]bool   // groups changed since their JSON was made
	enc   map[string][]byte // group id -> its groupRecord JSON
}

func newPersister(path string, log logrus.FieldLogger) *persister {
	return &persister{path: path, log: log, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		dirty: map[string]bool{}, enc: map[string][]byte{}}
}

// soon asks for a save.
func (ps *persister) soon() {
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// changedLocked marks group id changed (Emulator.mu held).
func (ps *persister) changedLocked(id string) {
	ps.dirty[id] = true
	ps.soon()
}

// removedLocked forgets group id (Emulator.mu held).
func (ps *persister) removedLocked(id string) {
	delete(ps.dirty, id)
	delete(ps.enc, id)
	ps.soon()
}

// otherChangedLocked: ClientToken records, virtual nodes, image caches or
// the id sequence changed; they are encoded whole on every save.
func (ps *persister) otherChangedLocked() { ps.soon() }

// run saves when asked, at most once per interval, until close. The
// interval grows to four times the last save's duration, so a big state
// spends at most a fifth of the time being saved.
func (ps *persister) run(encode func(all bool) ([]byte, error)) {
	defer close(ps.done)
	interval := minSnapshotInterval
	var last time.Time
	for {
		select {
		case <-ps.stop:
			return
		case <-ps.kick:
		}
		if wait := time.Until(last.Add(interval)); wait > 0 {
			select {
			case <-ps.stop:
				return
			case <-time.After(wait):
			}
		}
		start := time.Now()
		if err := ps.save(encode, false); err != nil {
			ps.log.WithError(err).Error("saving the ECI emulator state")
		}
		last = time.Now()
		interval = max(minSnapshotInterval, 4*last.Sub(start))
	}
}

// close stops run and saves a last time, every group encoded afresh.
func (ps *persister) close(encode func(all bool) ([]byte, error)) error {
	close(ps.stop)
	<-ps.done
	return ps.save(encode, true)
}

func (ps *persister) save(encode func(all bool) ([]byte, error), all bool) error {
	ps.writeMu.Lock()
	defer ps.writeMu.Unlock()
	b, err := encode(all)
	if err != nil {
		return fmt.Errorf("encoding the state: %w", err)
	}
	if err := writeFileAtomic(ps.path, b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", ps.path, err)
	}
	return nil
}

// encodeState makes state.json's content. Under the lock it encodes the
// groups that changed (all of them if all), virtual nodes and image
// caches, and copies the finished ClientToken records; the big join
// happens after.
func (e *Emulator) encodeState(all bool) ([]byte, error) {
	e.mu.Lock()
	hdr, parts, err := e.snapshotLocked(all)
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	head, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(head) + 16 + len(parts)*2048)
	buf.Write(head[:len(head)-1]) // without its closing brace
	buf.WriteString(`,"Groups":[`)
	for i, part := range parts {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(part)
	}
	buf.WriteString("]}\n")
	return buf.Bytes(), nil
}

func (e *Emulator) snapshotLocked(all bool) (*stateHeader, [][]byte, error) {
	ps := e.persist
	parts := make([][]byte, 0, len(e.order))
	for _, id := range e.order {
		g := e.groups[id]
		if b, ok := ps.enc[id]; ok && !all && !ps.dirty[id] {
			parts = append(parts, b)
			continue
		}
		b, err := json.Marshal(groupRecord{Group: g, ClientToken: g.clientToken, Created: g.created, Credentials: g.credentials, Pending: g.pending})
		if err != nil {
			return nil, nil, fmt.Errorf("encoding group %s: %w", id, err)
		}
		ps.enc[id] = b
		parts = append(parts, b)
	}
	clear(ps.dirty)
	tokens := make(map[string]*tokenRecord, len(e.tokens))
	for k, rec := range e.tokens {
		if rec.done == nil { // finished: no longer written to
			tokens[k] = rec
		}
	}
	vnodes := make([]*virtualNode, 0, len(e.vnOrder))
	for _, id := range e.vnOrder {
		vnodes = append(vnodes, e.vnodes[id])
	}
	caches := make([]*imageCache, 0, len(e.imcOrder))
	for _, id := range e.imcOrder {
		caches = append(caches, e.caches[id])
	}
	vb, err := json.Marshal(vnodes)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding virtual nodes: %w", err)
	}
	cb, err := json.Marshal(caches)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding image caches: %w", err)
	}
	return &stateHeader{Version: stateVersion, Region: e.cfg.Region, SavedAt: time.Now().UTC(), Seq: e.seq, Tokens: tokens,
		VirtualNodes: vb, ImageCaches: cb}, parts, nil
}

// load reads state.json, if there is one, into a new emulator.
func (e *Emulator) load() error {
	path := e.persist.path
	removeTemporaries(path)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("%s has version %d, this emulator reads %d", path, st.Version, stateVersion)
	}
	if st.Region != e.cfg.Region {
		return fmt.Errorf("%s holds region %s, not %s: use that region or another data directory", path, st.Region, e.cfg.Region)
	}
	e.seq = st.Seq
	for _, r := range st.Groups {
		g := r.Group
		if g == nil || g.ContainerGroupID == "" {
			return fmt.Errorf("%s: a group without an id", path)
		}
		g.clientToken, g.created, g.credentials, g.pending = r.ClientToken, r.Created, r.Credentials, r.Pending
		// When it last changed was not saved: as of now, so a poller's
		// SinceSecond misses nothing across a restart.
		g.changed = time.Now()
		e.groups[g.ContainerGroupID] = g
		e.order = append(e.order, g.ContainerGroupID)
	}
	for k, rec := range st.Tokens {
		e.tokens[k] = rec
	}
	for _, v := range st.VirtualNodes {
		e.vnodes[v.VirtualNodeID] = v
		e.vnOrder = append(e.vnOrder, v.VirtualNodeID)
	}
	for _, c := range st.ImageCaches {
		e.caches[c.ImageCacheID] = c
		e.imcOrder = append(e.imcOrder, c.ImageCacheID)
	}
	e.log.WithFields(logrus.Fields{"groups": len(e.groups), "virtualNodes": len(e.vnodes), "imageCaches": len(e.caches)}).
		Info("loaded the ECI emulator state")
	return nil
}

// resume carries on what the previous emulator on this DataDir left in
// flight: each group, virtual node and image cache continues from the
// status it was saved in, and Running groups go to the runtime, which
// treats the restart as a host restart (see runtime.resume).
func (e *Emulator) resume() {
	e.mu.Lock()
	var running []*group
	for _, id := range e.order {
		switch g := e.groups[id]; g.Status {
		case "Scheduling":
			go e.lifecycle(id)
		case "Pending":
			go e.startWhenPending(id)
		case "Updating":
			go e.applyUpdate(id)
		case "Running", "Restarting": // a restart cut short is a lost run too
			running = append(running, g)
		}
	}
	for _, id := range e.vnOrder {
		if e.vnodes[id].Status == "Pending" {
			go e.virtualNodeLifecycle(id)
		}
	}
	for _, id := range e.imcOrder {
		switch e.caches[id].Status {
		case "Preparing", "Creating", "Updating":
			go e.buildImageCache(id)
		}
	}
	e.mu.Unlock()
	for _, g := range running {
		e.runtime.resume(g)
	}
}

// removeTemporaries deletes the temporary files of saves a crash cut short.
func removeTemporaries(path string) {
	matches, _ := filepath.Glob(path + ".tmp-*")
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

// writeFileAtomic replaces path with data: readers see the old or the new
// content, never a part, even if the process dies midway.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = func() error {
		defer f.Close()
		if err := f.Chmod(mode); err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		return f.Sync()
	}()
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// Make the rename itself durable.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
