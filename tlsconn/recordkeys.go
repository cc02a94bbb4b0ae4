package tlsconn

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"

	"golang.org/x/crypto/chacha20poly1305"
)

// User-space record layer limits (RFC 8446 §5.1-5.4, RFC 5246 §6.2).
const (
	// ciphertextMax13 bounds TLSCiphertext.length in TLS 1.3: 2^14 + 256.
	ciphertextMax13 = maxPlaintext + 256
	// ciphertextMax12 bounds TLSCiphertext.length in TLS 1.2: 2^14 + 2048.
	ciphertextMax12 = maxPlaintext + 2048
	// innerPlaintextMax13 bounds a decrypted TLS 1.3 TLSInnerPlaintext
	// (content, content type, zero padding): 2^14 + 1.
	innerPlaintextMax13 = maxPlaintext + 1
	// explicitNonceBytes is the TLS 1.2 AES-GCM nonce_explicit carried in
	// each record (RFC 5288 §3); we send the sequence number there. TLS
	// 1.2 ChaCha20-Poly1305 records carry none (RFC 7905 §2).
	explicitNonceBytes = 8
	// tagBytes is the authentication tag of both AEADs, AES-GCM and
	// ChaCha20-Poly1305.
	tagBytes = 16
	// ad12Bytes is the TLS 1.2 additional data: seq_num(8) || type(1) ||
	// version(2) || length(2) (RFC 5246 §6.2.3.3).
	ad12Bytes = 8 + 1 + 2 + 2
	// readBufBytes holds one record of the largest size either version
	// allows, so any legal record can be opened in place.
	readBufBytes = recordHeaderBytes + ciphertextMax12
	// writeBufBytes holds one sealed record carrying maxPlaintext bytes:
	// header, TLS 1.2 explicit nonce or TLS 1.3 inner content type, tag.
	writeBufBytes = recordHeaderBytes + explicitNonceBytes + maxPlaintext + 1 + tagBytes
	// keyUpdateRecords: once our TLS 1.3 send key has protected this many
	// records we send a KeyUpdate before the next one. RFC 8446 §5.5 puts
	// the AES-GCM limit at 2^24.5 full-size records per key (ChaCha20-
	// Poly1305 has none below the sequence number space; one limit for
	// both keeps it simple).
	keyUpdateRecords = 1 << 24
	// seqMax is the last usable sequence number: a sequence number must
	// never wrap (RFC 8446 §5.3, RFC 5246 §6.1), so a direction that
	// reaches it is finished rather than reuse a nonce.
	seqMax = 1<<64 - 1
)

var errSeqExhausted = &recordError{alertInternalError, "tlsconn: record sequence number exhausted"}

// recordSuite maps a negotiated (version, cipher suite) to what the
// user-space record layer supports: every suite the kernel could take,
// AES-GCM (crypto/cipher) and ChaCha20-Poly1305 (golang.org/x/crypto: the
// standard library exports no ChaCha20-Poly1305 AEAD; x/crypto's is the
// implementation crypto/tls itself vendors), TLS 1.3 and TLS 1.2.
func recordSuite(version, id uint16) (suite, bool) {
	return offloadable(version, id)
}

// direction is one direction's user-space record protection: key, IV and
// next sequence number, the AEAD built from them, and (TLS 1.3) the
// traffic secret that KeyUpdate ratchets. The scratch arrays let Seal and
// Open run without allocating.
type direction struct {
	k    trafficKeys
	aead cipher.AEAD
	// explicitNonce: TLS 1.2 AES-GCM, whose records carry an 8-byte
	// nonce_explicit after the header (RFC 5288 §3). TLS 1.3 and TLS 1.2
	// ChaCha20-Poly1305 (RFC 7905 §2) records carry none: the nonce is
	// the 12-byte IV XOR the sequence number.
	explicitNonce bool
	secret        secretBuf // TLS 1.3 only; random unused
	nonce         [ivBytesMax]byte
	ad            [ad12Bytes]byte
}

// init takes k (copied) and, for TLS 1.3, the traffic secret it came from.
func (d *direction) init(k *trafficKeys, secret []byte) error {
	if len(secret) > secretBytesMax {
		return errors.New("tlsconn: traffic secret too long")
	}
	if k.ivLen() != ivBytesMax && k.ivLen() != ivBytesMax-explicitNonceBytes {
		return errors.New("tlsconn: record layer: unsupported IV length")
	}
	d.k = *k
	d.explicitNonce = k.ivLen() < ivBytesMax // 4-byte salt: AES-GCM in TLS 1.2
	d.secret.n = copy(d.secret.b[:], secret)
	return d.setAEAD()
}

// explicitLen is the nonce_explicit length of this direction's TLS 1.2
// records: 8 for AES-GCM, 0 for ChaCha20-Poly1305.
func (d *direction) explicitLen() int {
	if d.explicitNonce {
		return explicitNonceBytes
	}
	return 0
}

// setAEAD builds the AEAD of d.k's suite: ChaCha20-Poly1305 or AES-GCM.
// Neither's key state can be wiped from here (x/crypto keeps a copy of
// the key, crypto/aes a key schedule, and neither exposes it; crypto/tls
// has the same limit); zero drops the reference.
func (d *direction) setAEAD() error {
	var a cipher.AEAD
	var err error
	if d.k.s.kernelCipher == kernelChaCha20 {
		a, err = chacha20poly1305.New(d.k.key[:d.k.s.keyLen])
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(d.k.key[:d.k.s.keyLen]); err == nil {
			a, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		return err
	}
	if a.NonceSize() != ivBytesMax || a.Overhead() != tagBytes { // the record code assumes both
		return errors.New("tlsconn: record layer: unexpected AEAD nonce or tag size")
	}
	d.aead = a
	return nil
}

// nonceFor is the nonce of the record at d.k.seq. TLS 1.3 (any suite)
// and TLS 1.2 ChaCha20-Poly1305: the 12-byte write IV XOR the left-padded
// sequence number (RFC 8446 §5.3, RFC 7905 §2). TLS 1.2 AES-GCM: the
// 4-byte salt || the sequence number as nonce_explicit (RFC 5288 §3). The
// sequence number strictly increases per direction, so no nonce repeats
// under one key.
func (d *direction) nonceFor() []byte {
	if !d.explicitNonce {
		d.nonce = d.k.iv
		var s [8]byte
		binary.BigEndian.PutUint64(s[:], d.k.seq)
		for i := range s {
			d.nonce[ivBytesMax-8+i] ^= s[i]
		}
		return d.nonce[:]
	}
	copy(d.nonce[:], d.k.iv[:4])
	binary.BigEndian.PutUint64(d.nonce[4:], d.k.seq)
	return d.nonce[:]
}

// ad12 fills the TLS 1.2 additional data for a record of type typ and
// plaintext length n at d.k.seq.
func (d *direction) ad12(typ byte, n int) []byte {
	binary.BigEndian.PutUint64(d.ad[:8], d.k.seq)
	d.ad[8], d.ad[9], d.ad[10] = typ, 3, 3
	d.ad[11], d.ad[12] = byte(n>>8), byte(n)
	return d.ad[:]
}

// update moves a TLS 1.3 direction to the next traffic secret (RFC 8446
// §7.2): secret' = HKDF-Expand-Label(secret, "traffic upd", "", Hash.length),
// with key and IV derived from it and the sequence number back at 0.
func (d *direction) update() error {
	if d.k.version != tls.VersionTLS13 || d.secret.n == 0 {
		return errors.New("tlsconn: KeyUpdate without a TLS 1.3 traffic secret")
	}
	var next [secretBytesMax]byte
	defer clear(next[:])
	n := d.secret.n // a traffic secret is one hash long
	if err := expandLabel(d.k.s.hash, d.secret.bytes(), "traffic upd", next[:n]); err != nil {
		return err
	}
	k, err := keysTLS13(d.k.s, next[:n], 0)
	defer k.zero()
	if err != nil {
		return err
	}
	d.k = k
	copy(d.secret.b[:], next[:n])
	return d.setAEAD()
}

// zero wipes the key material and drops the AEAD.
func (d *direction) zero() { *d = direction{} }
