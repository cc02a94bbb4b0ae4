package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/prober"
	"github.com/servalproxy/serval/tlsconn"
)

// serverTLS is the termination config the flags ask for; nil without
// --cert (plain HTTP). The handshake, the wait for its first byte
// included, is bounded by --header-timeout, as nginx bounds it by
// client_header_timeout: the slowloris defence the flag promises ("a new
// connection that sends nothing is closed after it") holds on the HTTPS
// port too, instead of the library's fixed 10 s.
func serverTLS(o *options) *tlsconn.ServerConfig {
	if o.certFile == "" {
		return nil
	}
	return &tlsconn.ServerConfig{CertFile: o.certFile, KeyFile: o.keyFile, ClientCAFile: o.clientCAFile, Mode: o.ktls,
		SessionTicketSeed: o.ticketSeed, HandshakeTimeout: o.headerTimeout}
}

// upstreamTLS is the origination config shared by every HTTPS backend.
func upstreamTLS(o *options) tlsconn.ClientConfig {
	return tlsconn.ClientConfig{CAFile: o.upstreamCAFile, ServerName: o.upstreamServerName,
		InsecureSkipVerify: o.insecureSkipVerify, Mode: o.ktls}
}

// markTLS sets Upstream.TLS on the backends --upstream-tls names. Every
// name must be one of the backends, compared as host:port: a typo would
// otherwise silently send plaintext to an HTTPS port.
func markTLS(table []serval.Upstream, list string) error {
	if list == "" {
		return nil
	}
	for _, item := range strings.Split(list, ",") {
		host, port, err := net.SplitHostPort(item)
		if err != nil {
			return errors.New("--upstream-tls: bad address " + item + ": " + err.Error())
		}
		want := net.JoinHostPort(host, port)
		found := false
		for i := range table {
			if table[i].Addr() == want {
				table[i].TLS, found = true, true
			}
		}
		if !found {
			return errors.New("--upstream-tls: " + item + " is not one of --backends")
		}
	}
	return nil
}

// warnInsecure logs, loudly and once at startup, that upstream
// certificates are not verified.
func warnInsecure(o *options, log *slog.Logger) {
	if !o.insecureSkipVerify {
		return
	}
	log.Warn("!!! --insecure-skip-verify: HTTPS backends' certificates are NOT verified; " +
		"anyone on the network path can impersonate them and read or change the traffic. " +
		"Use --upstream-ca instead outside of tests. !!!")
}

// probeDialer returns the prober's Dial for a table with HTTPS backends:
// plain TCP for the others, TCP then a TLS handshake (same verification
// as the proxy's) for those, so a probe checks what requests will meet.
// It returns nil when no backend uses TLS (the prober dials plain TCP).
//
// The proxy's per-upstream TLS clients live inside the forwarder and are
// not exported for dialling with a context, so the probes get their own
// tlsconn.Client per backend (built here, once, each with its session
// cache so a probe resumes instead of running a full handshake).
func probeDialer(table []serval.Upstream, cfg tlsconn.ClientConfig) (prober.DialFunc, error) {
	clients := make([]*tlsconn.Client, len(table))
	any := false
	// A probe is one short exchange: offloading its records to the
	// kernel costs more setup than it saves, and must not fail a probe
	// under --ktls require (the proxy's own connections enforce that).
	cfg.Mode = tlsconn.ModeOff
	for i := range table {
		if !table[i].TLS {
			continue
		}
		c, err := tlsconn.NewClient(cfg, table[i].Host)
		if err != nil {
			return nil, err
		}
		clients[i], any = c, true
	}
	if !any {
		return nil, nil
	}
	var d net.Dialer
	return func(ctx context.Context, u *serval.Upstream) (net.Conn, error) {
		raw, err := d.DialContext(ctx, "tcp", u.Addr())
		if err != nil || !u.TLS {
			return raw, err
		}
		conn, _, _, err := clients[u.Index].Handshake(ctx, raw.(*net.TCPConn))
		if err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}, nil
}

// tlsReloader is the part of *server.Server the reload loop uses.
type tlsReloader interface{ ReloadTLS() error }

// watchReload calls reopen (the access log file, when there is one) and
// srv.ReloadTLS on every signal from hup (SIGHUP in main, a plain channel
// in tests) until stop is closed; the server logs
// the outcome (new certificates, or the rejection and that the current
// ones stay). The returned wait blocks until the loop has exited.
func watchReload(srv tlsReloader, tlsOn bool, hup <-chan os.Signal, stop <-chan struct{}, log *slog.Logger, reopen func() error) (wait func()) {
	var wg sync.WaitGroup
	if hup == nil {
		return wg.Wait
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-hup:
				if reopen != nil {
					if err := reopen(); err != nil {
						log.Error("SIGHUP: cannot reopen the access log; it goes on in the old file", "err", err)
					} else {
						log.Info("SIGHUP: access log reopened")
					}
				}
				if !tlsOn {
					if reopen == nil {
						log.Info("SIGHUP: no --cert and no --access-log file, nothing to reload")
					}
					continue
				}
				log.Info("SIGHUP: reloading the TLS certificate files")
				srv.ReloadTLS() // logs success or the rejection
			}
		}
	})
	return wg.Wait
}
