package approver

import "k8s.io/client-go/util/workqueue"

// Key is a queued CSR. The requestor is part of the key so the queue can be
// fair between requestors without reading the cache; a CSR's requestor never
// changes.
type Key struct {
	Requestor string
	Name      string
}

// fairQueue is a workqueue.Queue that keeps one FIFO per requestor and pops
// from the requestors in turn, so one requestor's thousand CSRs cannot hold
// back another's single one. The workqueue calls it under its own lock.
type fairQueue struct {
	fifos map[string][]Key
	// ring lists requestors with queued items, in the order they are served.
	ring []string
	n    int
}

var _ workqueue.Queue[Key] = (*fairQueue)(nil)

func newFairQueue() *fairQueue {
	return &fairQueue{fifos: map[string][]Key{}}
}

func (q *fairQueue) Touch(Key) {}

func (q *fairQueue) Push(k Key) {
	fifo, active := q.fifos[k.Requestor]
	if !active {
		q.ring = append(q.ring, k.Requestor)
	}
	q.fifos[k.Requestor] = append(fifo, k)
	q.n++
}

func (q *fairQueue) Len() int { return q.n }

// Pop takes the head of the first requestor's FIFO and moves that requestor
// to the back of the ring.
func (q *fairQueue) Pop() Key {
	r := q.ring[0]
	q.ring[0] = ""
	q.ring = q.ring[1:]
	fifo := q.fifos[r]
	k := fifo[0]
	fifo[0] = Key{}
	fifo = fifo[1:]
	if len(fifo) == 0 {
		delete(q.fifos, r)
	} else {
		q.fifos[r] = fifo
		q.ring = append(q.ring, r)
	}
	q.n--
	return k
}
