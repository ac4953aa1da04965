// Package model holds ECI's domain types (the container group vnode asks
// for, the instance ECI reports) and the facts of ECI itself, such as the
// specifications it sells. It imports nothing of vnode, so the provider,
// translation, the ECI client and the emulator can all depend on it.
package model
