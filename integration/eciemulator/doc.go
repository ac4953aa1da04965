// Package eciemulator is a local Alibaba Cloud ECI API (version 2018-08-08)
// that speaks the protocol exactly as github.com/aliyun/alibaba-cloud-sdk-go
// sends it: RPC-style requests with every parameter in the query, signed
// with HMAC-SHA1 over the canonical query, answered with ECI's JSON bodies
// and error envelopes ({RequestId, HostId, Code, Message, Recommend}) and
// HTTP statuses. It is vnode's test double for every test above the client
// layer and the embedded default a new user runs first, so it validates like
// the cloud instead of accepting anything.
//
// Two runtimes: "process" runs each container's command as a local process
// (own process group, sandbox directory, env), so logs and exec are real;
// "sim" runs nothing and holds thousands of groups for benchmarks.
//
// Exec sessions: ExecContainerCommand returns a one-time WebSocketUri
// ws://<host>/exec/?s=<token> (valid 30 s). ECI does not document its
// framing; this emulator uses Kubernetes' v4.channel.k8s.io layout: every
// binary message starts with a channel byte — 0 stdin (client to server),
// 1 stdout, 2 stderr, 3 the final status (a metav1.Status; a non-zero exit
// code is a cause of type ExitCode), 4 resize ({"Width":w,"Height":h}),
// and the message [255, 0] closes stdin.
//
// Test hooks (Go API, and an admin HTTP endpoint under /admin/ that needs
// the configured bearer token): fault injection per action (latency, error
// rate and code, hangs, commit-then-fail), deleting or expiring an instance
// behind the client's back, and call counts.
package eciemulator
