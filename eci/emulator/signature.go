package emulator

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vnode-project/vnode/eci/model"
)

// stringToSign builds the RPC string to sign from every parameter but
// Signature, empty values included.
func stringToSign(method string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, model.PercentEncode(k)+"="+model.PercentEncode(params.Get(k)))
	}
	return method + "&%2F&" + model.PercentEncode(strings.Join(parts, "&"))
}

// sign is base64(HMAC-SHA1(secret + "&", stringToSign)).
func sign(secret, sts string) string {
	mac := hmac.New(sha1.New, []byte(secret+"&"))
	mac.Write([]byte(sts))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// nonces remembers SignatureNonces for the skew window, so a replayed
// request is refused.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time
	last time.Time
}

const maxSkew = 15 * time.Minute

func (n *nonces) use(nonce string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	if now.Sub(n.last) > time.Minute {
		for k, t := range n.seen {
			if now.Sub(t) > 2*maxSkew {
				delete(n.seen, k)
			}
		}
		n.last = now
	}
	if _, dup := n.seen[nonce]; dup {
		return false
	}
	n.seen[nonce] = now
	return true
}
