// Package tlsconn holds Serval's TLS: configs for termination (Server:
// SNI certificate selection with wildcards, ALPN, optional mTLS, reload
// without restart) and origination (Client: verification on by default,
// SNI rules, per-upstream session resumption), and kernel TLS (kTLS)
// offload with automatic per-connection fallback to user space: Serval's
// own zero-allocation record layer (RecordConn) on terminated
// connections, crypto/tls otherwise.
//
// Layer 1: it imports the standard library (syscall for the kernel
// interface) and golang.org/x/crypto/chacha20poly1305, RecordConn's
// ChaCha20-Poly1305 AEAD. server and proxy call Server.Handshake /
// Client.Handshake on an accepted or dialled *net.TCPConn and get back a
// net.Conn (a *Conn when offloaded, a *RecordConn or a *CryptoConn, a
// *tls.Conn guarded against writing after a failed write, otherwise), the raw socket when offloaded (for splice), and a ConnInfo
// computed once per connection (ConnInfo.Path says which). A caller that
// reads its sockets its own way (Serval's readiness poller) hands that
// wrapper over: Client.HandshakeOver on the client side,
// RecordConn.UseTransport right after a server handshake. Several
// processes serving one port share resumable sessions through
// ServerConfig.SessionTicketSeed.
//
// # How offload works
//
// crypto/tls runs the handshake, then the kernel takes over the record
// layer: setsockopt(TCP_ULP, "tls"), then SOL_TLS TLS_TX and TLS_RX with a
// tls12_crypto_info_{aes_gcm_128,aes_gcm_256,chacha20_poly1305} holding
// key, IV/salt and the next record sequence number of each direction.
// From then on Read is recvmsg (with a TLS_GET_RECORD_TYPE cmsg) and
// Write is write(2) on the socket. crypto/tls exposes neither keys nor
// sequence numbers, so Handshake gets them soundly this way:
//
//   - Keys. The connection's tls.Config is a per-connection clone (via
//     GetConfigForClient on the server, Clone on the client) whose
//     KeyLogWriter belongs to that connection alone, so there is nothing
//     to match across concurrent handshakes. It receives the TLS 1.3
//     CLIENT_/SERVER_TRAFFIC_SECRET_0 or the TLS 1.2 master secret
//     (CLIENT_RANDOM line). TLS 1.3 keys and IVs come from
//     HKDF-Expand-Label (RFC 8446 §7.3); TLS 1.2 ones from the PRF key
//     block (RFC 5246 §6.3), which also needs the server random: it is
//     read from the ServerHello bytes that pass through (handshakeConn). The
//     client random of each key log line is checked against the
//     ClientHello bytes.
//   - No over-read. The socket is wrapped during the handshake by a
//     reader that returns exactly one record at a time, so crypto/tls
//     never buffers bytes past its last handshake record: the kernel sees
//     the stream from the first application record on.
//   - Sequence numbers. TLS 1.2: 1 each way (Finished was 0). TLS 1.3: 0
//     each way, except that a server writes its NewSessionTicket records
//     under the application key before Handshake returns; they are
//     counted through the per-connection WrapSession (one ticket, one
//     record; a ticket too large to be sure rules offload out). On the
//     client, tickets arriving later reach the kernel's RX path as
//     handshake records and Conn.Read skips them; a KeyUpdate ends the
//     connection with an error, alerts become io.EOF (close_notify) or an
//     AlertError.
//
// Fallback is per connection and never fails a handshake: no tls module
// (TCP_ULP: ENOENT), a cipher or version the kernel cannot take, missing
// secrets (e.g. a resumed TLS 1.2 session, whose master secret crypto/tls
// does not log) or ModeOff all keep the connection in user space: a
// terminated one on a RecordConn when its keys were captured (below), on
// crypto/tls (a *CryptoConn) otherwise, and an originated one on
// crypto/tls. ModeRequire turns those
// into errors. Counters (Stats) say which path each connection took and
// why; Probe says at startup whether the kernel can offload at all.
//
// # User-space records (RecordConn)
//
// crypto/tls allocates once per record read ((*tls.Conn).readFromUntil
// hands bytes.Buffer.ReadFrom a fresh reader), so a keep-alive request on
// a *tls.Conn costs an allocation. A terminated connection that the
// kernel does not take (no tls module, ModeOff, a refused cipher) instead
// moves, after the crypto/tls handshake, to a RecordConn built from the
// very keys and sequence numbers captured for offload: AES-GCM
// (crypto/cipher) and ChaCha20-Poly1305 (golang.org/x/crypto, the
// implementation crypto/tls vendors: the standard library exports none),
// TLS 1.3 and TLS 1.2 (RFC 5288 and RFC 7905 record formats), sealed and
// opened into buffers owned by the connection, zero allocations per Read
// and Write. It honours TLS 1.3 KeyUpdate both ways (which the kernel here
// cannot), refuses TLS 1.2 renegotiation and any other post-handshake
// message with an alert, enforces the record size limits of RFC 8446 §5
// and RFC 5246 §6.2, and never lets a sequence number wrap. Resumed TLS
// 1.2 sessions (no master secret logged) stay on crypto/tls, and so,
// always, does origination: a client must keep feeding the server's
// NewSessionTickets to crypto/tls for resumption.
// ServerConfig.CryptoTLSRecords turns RecordConn off.
// Stats counts UserspaceRecords versus CryptoTLS (with the reason).
//
// Resumption and offload: a TLS 1.3 server issues tickets and still
// offloads. On the client, an offloaded TLS 1.3 connection drops the
// tickets it receives and a resumed TLS 1.2 connection stays in user
// space, so per upstream choose resumption (ModeOff) or offload.
package tlsconn
