package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"sort"
)

// tokenRecord is what a ClientToken was first used for: the request's
// parameters (hashed) and the answer, which a retry gets again.
type tokenRecord struct {
	Hash     string         `json:"Hash"`
	Response map[string]any `json:"Response"`

	// done is closed when the first request finishes; nil once it has.
	// A twin arriving meanwhile waits for it instead of acting twice.
	done chan struct{}
}

// idempotent runs h once per (action, ClientToken), as ECI does: the same
// token with the same parameters gets the first answer again (even after a
// restart of the emulator), the same token with other parameters gets
// IdempotentParameterMismatch. A failed first request leaves no record, so
// a retry acts. Without a ClientToken, h simply runs.
func (e *Emulator) idempotent(action string, p params, h handler) (map[string]any, *apiError) {
	token := p.get("ClientToken")
	if token == "" {
		return h(p)
	}
	if len(token) > 64 || !isASCII(token) {
		return nil, invalidParam("ClientToken", "at most 64 ASCII characters")
	}
	key, hash := action+"/"+token, paramsHash(p)
	rec, resp, apiErr := e.claimToken(key, hash)
	if rec == nil {
		return resp, apiErr
	}
	resp, apiErr = h(p)
	e.mu.Lock()
	if apiErr != nil {
		delete(e.tokens, key)
	} else {
		rec.Response = maps.Clone(resp)
		e.persist.otherChangedLocked()
	}
	close(rec.done)
	rec.done = nil
	e.mu.Unlock()
	return resp, apiErr
}

// claimToken returns a new record for the caller to act under, or (nil
// and) the answer of an earlier request with the token.
func (e *Emulator) claimToken(key, hash string) (*tokenRecord, map[string]any, *apiError) {
	for {
		e.mu.Lock()
		rec, ok := e.tokens[key]
		if !ok {
			rec = &tokenRecord{Hash: hash, done: make(chan struct{})}
			e.tokens[key] = rec
			e.mu.Unlock()
			return rec, nil, nil
		}
		done, resp := rec.done, maps.Clone(rec.Response)
		e.mu.Unlock()
		if rec.Hash != hash {
			return nil, nil, errf(http.StatusBadRequest, "IdempotentParameterMismatch", "The request uses the same client token as a previous, but non-identical request.")
		}
		if done == nil {
			return nil, resp, nil
		}
		<-done // then look again: the first request may have failed
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7e || s[i] < 0x20 {
			return false
		}
	}
	return true
}

// paramsHash identifies a request's parameters, leaving out the ones that
// change on every retry (signature, nonce, time).
func paramsHash(p params) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		switch k {
		case "Signature", "SignatureNonce", "Timestamp", "AccessKeyId", "SignatureType", "SignatureMethod", "SignatureVersion", "Format":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, p.get(k))
	}
	return hex.EncodeToString(h.Sum(nil))
}
