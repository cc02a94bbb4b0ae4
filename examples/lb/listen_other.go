//go:build !linux

package main

import (
	"errors"
	"net"
	"os"

	"github.com/servalproxy/serval"
)

var errWorkersLinux = errors.New("--workers above 1 needs Linux (a shared listening socket balanced through a memfd)")

// listenShared: worker processes need Linux.
func listenShared(addr string) (*os.File, string, error) { return nil, "", errWorkersLinux }

// selfExe: worker processes need Linux.
const selfExe = ""

// workerMasterGone: worker processes need Linux.
func workerMasterGone() <-chan struct{} { return nil }

// loadTable: worker processes need Linux (balance_linux.go).
type loadTable struct{}

func newLoadTable(int) (*loadTable, *os.File, error) { return nil, nil, errWorkersLinux }
func (*loadTable) leave(int)                         {}
func (*loadTable) close()                            {}

func workerAccepts(bool, net.Listener, serval.Metrics, int) (net.Listener, serval.Metrics, error) {
	return nil, nil, errWorkersLinux
}
