// Package sysfd takes sockets and epoll instances in and out of the Go
// runtime, for the event loops that read raw file descriptors (the edge's
// connection loop and the bench tool's readers).
package sysfd

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Detach takes a connection's socket away from the Go runtime: it
// duplicates the file descriptor, closes the connection and returns the
// duplicate, non-blocking and close-on-exec.
func Detach(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, errors.New("connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.Dup(int(f)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	nc.Close()
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Pollable registers a duplicate of an epoll descriptor with Go's
// netpoller (an epoll instance is readable while events are ready), so a
// loop can wait for it without holding a thread: RawConn.Read calls its
// function when events are ready. Closing the file releases the duplicate;
// a read deadline on it interrupts the wait.
func Pollable(epfd int) (*os.File, syscall.RawConn, error) {
	dup, err := unix.Dup(epfd)
	if err != nil {
		return nil, nil, err
	}
	unix.CloseOnExec(dup)
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, nil, err
	}
	f := os.NewFile(uintptr(dup), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}
