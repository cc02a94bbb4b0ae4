//go:build !plan9

package serval

import "syscall"

// localResourceErrnos are the errors of a host out of descriptors, socket
// buffers or memory (LocalResourceError).
var localResourceErrnos = [...]error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM}
