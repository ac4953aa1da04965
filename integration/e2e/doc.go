// Package e2e holds vnode's end-to-end tests: a real control plane
// (integration/controlplane), the ECI emulator (eci/emulator)
// reached through the real SDK, and a virtual node (provider/vnode) in
// between, driven with the Kubernetes API and kubectl as a user would.
package e2e
