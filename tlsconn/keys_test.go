package tlsconn

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeysTLS13RFC8448 checks HKDF-Expand-Label key and IV derivation
// against RFC 8448 §3 (simple 1-RTT handshake): the application traffic
// secrets and the write keys and IVs derived from them.
func TestKeysTLS13RFC8448(t *testing.T) {
	cases := []struct{ name, secret, key, iv string }{
		{"client application", "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5",
			"17422dda596ed5d9acd890e3c63f5051", "5b78923dee08579033e523d9"},
		{"server application", "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
			"9f02283b6c9c07efc26bb9f2ac92e356", "cf782b88dd83549aadf1e984"},
		{"server handshake", "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38",
			"3fce516009c21727d0f2e4e86ee403bc", "5d313eb2671276ee13000b30"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := keysTLS13(suiteAES128, unhex(t, c.secret), 7)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(k.key[:16]); got != c.key {
				t.Errorf("key %s, want %s", got, c.key)
			}
			if got := hex.EncodeToString(k.iv[:]); got != c.iv {
				t.Errorf("iv %s, want %s", got, c.iv)
			}
			if k.seq != 7 || k.version != tls.VersionTLS13 {
				t.Errorf("seq %d version %x", k.seq, k.version)
			}
		})
	}
}

// TestPRF12 checks the TLS 1.2 PRF against the P_SHA256 and P_SHA384
// vectors published on the IETF TLS list (msg03416).
func TestPRF12(t *testing.T) {
	cases := []struct {
		name               string
		h                  func() hash.Hash
		secret, seed, want string
	}{
		{"sha256", sha256.New, "9bbe436ba940f017b17652849a71db35", "a0ba9f936cda311827a6f796ffd5198c",
			"e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a" +
				"6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab" +
				"4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701" +
				"87347b66"},
		{"sha384", sha512.New384, "b80b733d6ceefcdc71566ea48e5567df", "cd665cf6a8447dd6ff8b27555edb7465",
			"7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cd" +
				"e9ca0faa60be9fe34f82b1233c9146a0e534cb400fed2700884f9dc236f80edd" +
				"8bfa961144c9e8d792eca722a7b32fc3d416d473ebc2c5fd4abfdad05d918425" +
				"9b5bf8cd4d90fa0d31e2dec479e4f1a26066f2eea9a69236a3e52655c9e9aee6" +
				"91c8f3a26854308d5eaa3be85e0990703d73e56f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.want)
			got := make([]byte, len(want))
			prf12(c.h, unhex(t, c.secret), "test label", unhex(t, c.seed), got)
			if !bytes.Equal(got, want) {
				t.Errorf("PRF\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestKeysTLS12Block checks the key block split: client key, server key,
// client IV, server IV, in that order, for each suite.
func TestKeysTLS12Block(t *testing.T) {
	master := bytes.Repeat([]byte{0x42}, 48)
	cr, sr := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for _, s := range []suite{suiteAES128, suiteAES256, suiteChaCha} {
		block := make([]byte, 2*s.keyLen+2*s.fixedIVLen)
		prf12(s.hash, master, "key expansion", append(append([]byte{}, sr...), cr...), block)
		c, sv := keysTLS12(s, master, cr, sr)
		k := s.keyLen
		if !bytes.Equal(c.key[:k], block[:k]) || !bytes.Equal(sv.key[:k], block[k:2*k]) ||
			!bytes.Equal(c.iv[:s.fixedIVLen], block[2*k:2*k+s.fixedIVLen]) ||
			!bytes.Equal(sv.iv[:s.fixedIVLen], block[2*k+s.fixedIVLen:]) {
			t.Errorf("cipher %d: key block split wrong", s.kernelCipher)
		}
		if c.seq != 1 || sv.seq != 1 {
			t.Errorf("TLS 1.2 application records start at seq 1, got %d/%d", c.seq, sv.seq)
		}
	}
}

// TestCryptoInfoLayout checks struct tls12_crypto_info_* as the kernel
// reads it: version, cipher, iv, key, salt, rec_seq.
func TestCryptoInfoLayout(t *testing.T) {
	var iv [12]byte
	for i := range iv {
		iv[i] = byte(0xa0 + i)
	}
	key := bytes.Repeat([]byte{0x55}, 32)
	seqBE := []byte{0, 0, 0, 0, 0, 0, 0, 9}
	cases := []struct {
		name    string
		version uint16
		s       suite
		want    [][]byte // iv, key, salt
	}{
		{"1.3 aes128", tls.VersionTLS13, suiteAES128, [][]byte{iv[4:], key[:16], iv[:4]}},
		{"1.3 aes256", tls.VersionTLS13, suiteAES256, [][]byte{iv[4:], key, iv[:4]}},
		{"1.3 chacha", tls.VersionTLS13, suiteChaCha, [][]byte{iv[:], key}},
		{"1.2 aes128", tls.VersionTLS12, suiteAES128, [][]byte{seqBE, key[:16], iv[:4]}},
		{"1.2 aes256", tls.VersionTLS12, suiteAES256, [][]byte{seqBE, key, iv[:4]}},
		{"1.2 chacha", tls.VersionTLS12, suiteChaCha, [][]byte{iv[:], key}},
	}
	for _, c := range cases {
		k := trafficKeys{version: c.version, s: c.s, seq: 9}
		copy(k.key[:], key)
		copy(k.iv[:], iv[:])
		var b [cryptoInfoBytesMax]byte
		n := k.cryptoInfo(&b)
		kv := uint16(kernelTLS13)
		if c.version == tls.VersionTLS12 {
			kv = kernelTLS12
		}
		want := binary.NativeEndian.AppendUint16(nil, kv)
		want = binary.NativeEndian.AppendUint16(want, c.s.kernelCipher)
		for _, part := range c.want {
			want = append(want, part...)
		}
		want = append(want, seqBE...)
		if !bytes.Equal(b[:n], want) {
			t.Errorf("%s:\n got %x\nwant %x", c.name, b[:n], want)
		}
	}
}

// TestKeyLogParse checks the per-connection key log capture.
func TestKeyLogParse(t *testing.T) {
	r := newHandshakeConn(nil)
	w := keyLogWriter{r}
	cr := bytes.Repeat([]byte{0xcc}, 32)
	sec := bytes.Repeat([]byte{0x5e}, 48)
	line := func(label string) []byte {
		return []byte(label + " " + hex.EncodeToString(cr) + " " + hex.EncodeToString(sec) + "\n")
	}
	w.Write(line("CLIENT_HANDSHAKE_TRAFFIC_SECRET"))
	w.Write(line("CLIENT_TRAFFIC_SECRET_0"))
	w.Write(line("SERVER_TRAFFIC_SECRET_0"))
	w.Write(line("CLIENT_RANDOM"))
	for _, s := range []*secretBuf{&r.clientSecret, &r.serverSecret, &r.master} {
		if !bytes.Equal(s.bytes(), sec) || !bytes.Equal(s.random[:], cr) {
			t.Errorf("captured %x / %x", s.random, s.bytes())
		}
	}
	if r.keylogErr {
		t.Error("keylogErr set on good lines")
	}
	w.Write([]byte("CLIENT_RANDOM zz 00\n"))
	if !r.keylogErr {
		t.Error("bad line accepted")
	}
	if n, _ := w.Write(make([]byte, 3)); n != 3 {
		t.Error("key log writer must never fail the handshake")
	}
}
