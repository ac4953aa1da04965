// Package bench compares the edge tunnel with apiserver-network-proxy
// (ANP v0.36.0, HTTP-CONNECT mode with mTLS) and a direct loopback dial:
// throughput each way at 1 and 16 streams, small-request latency on reused
// and new connections, and memory held by 1,000 idle streams. Both
// tunnels run as child processes (ours is this test binary re-executed),
// so memory is theirs alone. Run:
//
//	go test -run '^$' -bench VersusANP -benchtime 1x ./tunnel/bench/
//
// BenchmarkScale (scale_test.go) holds 1, 1,000 and 10,000 agent sessions
// on one server and compares its memory with ANP's server holding as many
// ANP agents; it also times a restart storm and CONNECT latency at scale:
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 60m ./tunnel/bench/
//
// ANP is built from the module proxy in a scratch module outside the
// repository; the benchmark skips, saying so, only if that build fails.
package bench
