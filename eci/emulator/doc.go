// Package emulator is a local Alibaba Cloud ECI API (version 2018-08-08)
// that speaks the protocol exactly as github.com/aliyun/alibaba-cloud-sdk-go
// sends it: RPC-style requests with every parameter in the query, signed
// with HMAC-SHA1 over the canonical query, answered with ECI's JSON bodies
// and error envelopes ({RequestId, HostId, Code, Message, Recommend}) and
// HTTP statuses. It is vnode's test double for every test above the client
// layer and the embedded default a new user runs first, so it validates like
// the cloud instead of accepting anything.
//
// Two runtimes: "process" runs each container's command as a local process
// inside its instance's isolation (package sandbox: own mount, PID and UTS
// namespaces, the host's root read-only under a writable layer, volumes at
// their mount paths, root in a user namespace that is unprivileged
// outside; the host's network), so logs and exec are real and nothing a
// pod does touches the host; it refuses to start where instances cannot
// be isolated. "sim" runs nothing and holds thousands of
// groups for benchmarks.
//
// Actions: container groups (Create, Describe, DescribeStatus, Update,
// Restart, Delete, logs, exec, metrics), virtual nodes (Create, Describe,
// Update, Delete) and image caches (Create, Describe, Update, Delete);
// every action that changes state honours ClientToken.
//
// State: groups, virtual nodes, image caches, ClientToken records and the
// id sequence are saved to DataDir/state.json (mode 0600, replaced
// atomically, at most every 200 ms and at Close), and a new emulator on
// the same DataDir carries on from them. With the process runtime a
// restart is a host restart: running containers lost their processes and
// come back per the restart policy (see processRuntime.resume).
//
// TLS: Config.TLS serves https with a self-signed certificate for
// 127.0.0.1, ::1 and localhost kept in DataDir/tls (or the given pair);
// clients trust Emulator.CertFile.
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
package emulator
