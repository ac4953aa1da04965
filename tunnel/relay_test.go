package tunnel

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// chunkReader returns its data in reads of the given sizes, in turn.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.sizes[c.i%len(c.sizes)], len(b), len(c.data))
	c.i++
	copy(b, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// Bytes arrive intact and in order whichever buffer each read used: quiet
// reads, reads that fill the small buffer, bulk reads, and back.
func TestCopyCountedSwitchesBuffersWithoutLoss(t *testing.T) {
	data := make([]byte, 4<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.IntN(256))
	}
	for _, sizes := range [][]int{
		{10},
		{smallBuffer, largeBuffer, largeBuffer, 5, smallBuffer - 1, smallBuffer},
		{smallBuffer, 100, smallBuffer, largeBuffer / 2, 1},
		{largeBuffer},
	} {
		var out bytes.Buffer
		if err := copyCounted(&out, &chunkReader{data: data, sizes: sizes}, nil, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("reads of %v: %d bytes out of %d, or in another order", sizes, out.Len(), len(data))
		}
	}
}
