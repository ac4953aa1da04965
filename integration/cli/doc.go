// Package cli tests the vnode CLI end to end on a real control plane
// (integration/controlplane) and the ECI emulator: the procedure of seed
// 004, both credential modes, and the bad input it must refuse unchanged.
package cli
