package tlsconn

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"hash"
)

// Kernel constants from <linux/tls.h>. They describe the kernel's ABI, not
// Linux code, so they live here where the portable key code can use them.
const (
	kernelTLS12 = 0x0303 // TLS_1_2_VERSION
	kernelTLS13 = 0x0304 // TLS_1_3_VERSION

	kernelAESGCM128 = 51 // TLS_CIPHER_AES_GCM_128
	kernelAESGCM256 = 52 // TLS_CIPHER_AES_GCM_256
	kernelChaCha20  = 54 // TLS_CIPHER_CHACHA20_POLY1305

	// cryptoInfoBytesMax is the largest struct tls12_crypto_info_* we
	// build: 4 header bytes + iv + key + salt + 8 rec_seq. AES-256-GCM
	// (8+32+4) and ChaCha20-Poly1305 (12+32+0) are both 56 bytes.
	cryptoInfoBytesMax = 56
	recSeqBytes        = 8

	// secretBytesMax is the largest secret a key log line carries: the
	// TLS 1.2 master secret is 48 bytes, a TLS 1.3 traffic secret is one
	// hash long (48 for SHA-384).
	secretBytesMax = 48
	// keyBytesMax and ivBytesMax bound one direction's key material.
	keyBytesMax = 32
	ivBytesMax  = 12
	randomBytes = 32 // ClientHello.random and ServerHello.random
)

// suite is what offload needs to know about one negotiated cipher suite.
type suite struct {
	kernelCipher uint16
	keyLen       int
	// fixedIVLen is the TLS 1.2 client/server_write_IV length from the key
	// block: 4 for AES-GCM (RFC 5288), 12 for ChaCha20-Poly1305 (RFC 7905).
	// TLS 1.3 IVs are always 12 bytes.
	fixedIVLen int
	// salted: the kernel splits the IV into a 4-byte salt and an 8-byte
	// "iv" (AES-GCM); ChaCha20 takes all 12 bytes as "iv" and no salt.
	salted bool
	hash   func() hash.Hash
}

var (
	suiteAES128 = suite{kernelAESGCM128, 16, 4, true, sha256.New}
	suiteAES256 = suite{kernelAESGCM256, 32, 4, true, sha512.New384}
	suiteChaCha = suite{kernelChaCha20, 32, 12, false, sha256.New}
)

// offloadable maps a negotiated (version, cipher suite) to the kernel's
// cipher. ok is false for anything the kernel cannot take.
func offloadable(version, id uint16) (s suite, ok bool) {
	switch version {
	case tls.VersionTLS13:
		switch id {
		case tls.TLS_AES_128_GCM_SHA256:
			return suiteAES128, true
		case tls.TLS_AES_256_GCM_SHA384:
			return suiteAES256, true
		case tls.TLS_CHACHA20_POLY1305_SHA256:
			return suiteChaCha, true
		}
	case tls.VersionTLS12:
		switch id {
		case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:
			return suiteAES128, true
		case tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
			return suiteAES256, true
		case tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
			return suiteChaCha, true
		}
	}
	return suite{}, false
}

// trafficKeys is one direction's record protection state, everything the
// kernel's crypto_info holds.
type trafficKeys struct {
	version uint16 // tls.VersionTLS12 or tls.VersionTLS13
	s       suite
	key     [keyBytesMax]byte
	// iv is the TLS 1.3 write_iv (12 bytes) or the TLS 1.2 fixed IV
	// (4 bytes for GCM, 12 for ChaCha20).
	iv  [ivBytesMax]byte
	seq uint64 // sequence number of the next record
}

func (k *trafficKeys) ivLen() int {
	if k.version == tls.VersionTLS13 {
		return ivBytesMax
	}
	return k.s.fixedIVLen
}

// cryptoInfo lays out struct tls12_crypto_info_<cipher> in b and returns
// its length: u16 version, u16 cipher_type (native endian), then iv, key,
// salt and rec_seq (big endian, as on the wire).
func (k *trafficKeys) cryptoInfo(b *[cryptoInfoBytesMax]byte) int {
	kv := uint16(kernelTLS13)
	if k.version == tls.VersionTLS12 {
		kv = kernelTLS12
	}
	binary.NativeEndian.PutUint16(b[0:], kv)
	binary.NativeEndian.PutUint16(b[2:], k.s.kernelCipher)
	n := 4
	var salt []byte
	switch {
	case !k.s.salted: // ChaCha20: the whole 12-byte IV, no salt.
		n += copy(b[n:], k.iv[:ivBytesMax])
	case k.version == tls.VersionTLS13: // salt = iv[:4], "iv" = iv[4:]
		n += copy(b[n:], k.iv[4:ivBytesMax])
		salt = k.iv[:4]
	default:
		// TLS 1.2 GCM: the 8-byte explicit nonce travels in each record.
		// The kernel writes its "iv" field as that nonce and increments
		// it per record; by convention (and as crypto/tls does) it is
		// the sequence number.
		binary.BigEndian.PutUint64(b[n:], k.seq)
		n += 8
		salt = k.iv[:4]
	}
	n += copy(b[n:], k.key[:k.s.keyLen])
	n += copy(b[n:], salt)
	binary.BigEndian.PutUint64(b[n:], k.seq)
	return n + recSeqBytes
}

// zero wipes the key material once the kernel has its copy.
func (k *trafficKeys) zero() { *k = trafficKeys{} }

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1) with an empty context:
// HKDF-Expand(secret, uint16 length || "tls13 "+label || 0, length).
func expandLabel(h func() hash.Hash, secret []byte, label string, out []byte) error {
	const prefix = "tls13 "
	var info [2 + 1 + 18 + 1]byte // labels here are "key" and "iv"
	binary.BigEndian.PutUint16(info[0:], uint16(len(out)))
	info[2] = byte(len(prefix) + len(label))
	n := 3 + copy(info[3:], prefix)
	n += copy(info[n:], label)
	info[n] = 0 // empty context
	b, err := hkdf.Expand(h, secret, string(info[:n+1]), len(out))
	if err != nil {
		return err
	}
	copy(out, b)
	clear(b)
	return nil
}

// keysTLS13 derives write key and IV from a traffic secret (RFC 8446 §7.3).
func keysTLS13(s suite, secret []byte, seq uint64) (trafficKeys, error) {
	k := trafficKeys{version: tls.VersionTLS13, s: s, seq: seq}
	if err := expandLabel(s.hash, secret, "key", k.key[:s.keyLen]); err != nil {
		return k, err
	}
	if err := expandLabel(s.hash, secret, "iv", k.iv[:ivBytesMax]); err != nil {
		return k, err
	}
	return k, nil
}

// prf12 is the TLS 1.2 PRF (RFC 5246 §5): P_hash(secret, label || seed)
// written into out.
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, out []byte) {
	m := hmac.New(h, secret)
	var a, chunk [sha512.Size384]byte // A(i) and one output block
	m.Write([]byte(label))
	m.Write(seed)
	ai := m.Sum(a[:0]) // A(1)
	for len(out) > 0 {
		m.Reset()
		m.Write(ai)
		m.Write([]byte(label))
		m.Write(seed)
		c := m.Sum(chunk[:0])
		out = out[copy(out, c):]
		m.Reset()
		m.Write(ai)
		ai = m.Sum(a[:0])
	}
	clear(a[:])
	clear(chunk[:])
}

// keysTLS12 expands the master secret into the key block (RFC 5246 §6.3):
// client_write_key, server_write_key, client_write_IV, server_write_IV
// (AEAD suites have no MAC keys). It returns the client and server
// directions, both starting at seq 1: the Finished message was seq 0.
func keysTLS12(s suite, master, clientRandom, serverRandom []byte) (client, server trafficKeys) {
	var seed [2 * randomBytes]byte
	copy(seed[:], serverRandom)
	copy(seed[randomBytes:], clientRandom)
	var block [2*keyBytesMax + 2*ivBytesMax]byte
	n := 2*s.keyLen + 2*s.fixedIVLen
	prf12(s.hash, master, "key expansion", seed[:], block[:n])
	client = trafficKeys{version: tls.VersionTLS12, s: s, seq: 1}
	server = client
	off := copy(client.key[:s.keyLen], block[:])
	off += copy(server.key[:s.keyLen], block[off:])
	off += copy(client.iv[:s.fixedIVLen], block[off:])
	copy(server.iv[:s.fixedIVLen], block[off:])
	clear(block[:])
	return client, server
}
