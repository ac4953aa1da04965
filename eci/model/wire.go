package model

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"
)

// PercentEncode is the RFC 3986 encoding Alibaba Cloud's RPC signature
// uses: url.QueryEscape with space as %20, * as %2A and ~ left as is.
func PercentEncode(s string) string {
	e := url.QueryEscape(s)
	e = strings.ReplaceAll(e, "+", "%20")
	e = strings.ReplaceAll(e, "*", "%2A")
	return strings.ReplaceAll(e, "%7E", "~")
}

// MaxTagValue is the longest tag value ECI accepts.
const MaxTagValue = 128

// TagValue is the tag value that stands for s: s itself when it fits in
// ECI's 128 characters, else its first characters and a hash of the whole,
// so two long names that share a prefix get different tags. Whoever sets a
// tag from a name and whoever selects or compares by that name must both
// use TagValue, so a long name still finds its own instances.
func TagValue(s string) string {
	if len(s) <= MaxTagValue {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:8])
	return s[:MaxTagValue-len(h)-1] + "-" + h
}
