//go:build !linux

package server

import "os"

// ActivatedListeners returns the listening sockets a service manager
// passed to this process (systemd socket activation, Linux only): none
// on this platform.
func ActivatedListeners() ([]*os.File, error) { return nil, nil }
