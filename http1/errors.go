package http1

import (
	"errors"

	"github.com/servalproxy/serval"
)

// Request-head and chunked-body rejections. Each is a package-level value
// so that returning it never allocates; Status is what the client gets.
// ParseResponse maps each to its 502 counterpart (see responseError).
var (
	ErrBareLF          = &serval.StatusError{Status: 400, Msg: "http1: bare LF"}
	ErrBareCR          = &serval.StatusError{Status: 400, Msg: "http1: CR not followed by LF"}
	ErrBadMethod       = &serval.StatusError{Status: 400, Msg: "http1: invalid method"}
	ErrBadTarget       = &serval.StatusError{Status: 400, Msg: "http1: invalid request-target"}
	ErrTargetTooLong   = &serval.StatusError{Status: 414, Msg: "http1: request-target too long"}
	ErrBadVersion      = &serval.StatusError{Status: 400, Msg: "http1: invalid HTTP version"}
	ErrVersion         = &serval.StatusError{Status: 505, Msg: "http1: HTTP version not supported"}
	ErrBadFieldName    = &serval.StatusError{Status: 400, Msg: "http1: invalid field name"}
	ErrBadFieldValue   = &serval.StatusError{Status: 400, Msg: "http1: invalid field value"}
	ErrObsFold         = &serval.StatusError{Status: 400, Msg: "http1: obsolete line folding"}
	ErrHeadTooLarge    = &serval.StatusError{Status: 431, Msg: "http1: head too large"}
	ErrTooManyFields   = &serval.StatusError{Status: 431, Msg: "http1: too many header fields"}
	ErrBadLength       = &serval.StatusError{Status: 400, Msg: "http1: invalid content-length"}
	ErrLengthAndTE     = &serval.StatusError{Status: 400, Msg: "http1: content-length with transfer-encoding"}
	ErrBadTE           = &serval.StatusError{Status: 400, Msg: "http1: transfer-encoding must end in chunked once"}
	ErrTEVersion       = &serval.StatusError{Status: 400, Msg: "http1: transfer-encoding in HTTP/1.0"}
	ErrTENotSupported  = &serval.StatusError{Status: 501, Msg: "http1: transfer coding not implemented"}
	ErrMissingHost     = &serval.StatusError{Status: 400, Msg: "http1: missing host"}
	ErrRepeatedHost    = &serval.StatusError{Status: 400, Msg: "http1: repeated host"}
	ErrBadHost         = &serval.StatusError{Status: 400, Msg: "http1: invalid host"}
	ErrExpectation     = &serval.StatusError{Status: 417, Msg: "http1: unsupported expectation"}
	ErrBadStatusLine   = &serval.StatusError{Status: 502, Msg: "http1: invalid status line"}
	ErrBadChunkSize    = &serval.StatusError{Status: 400, Msg: "http1: invalid chunk size"}
	ErrBadChunkExt     = &serval.StatusError{Status: 400, Msg: "http1: invalid chunk extension"}
	ErrChunkExtTooLong = &serval.StatusError{Status: 400, Msg: "http1: chunk extension too long"}
	ErrBadChunkEnd     = &serval.StatusError{Status: 400, Msg: "http1: chunk data not followed by CRLF"}
	ErrTrailerTooLarge = &serval.StatusError{Status: 431, Msg: "http1: trailer section too large"}
)

// Response-head rejections: an invalid response is never forwarded, the
// client gets 502 whatever the defect.
var (
	errRespBareLF        = &serval.StatusError{Status: 502, Msg: "http1: invalid response: bare LF"}
	errRespBareCR        = &serval.StatusError{Status: 502, Msg: "http1: invalid response: CR not followed by LF"}
	errRespFieldName     = &serval.StatusError{Status: 502, Msg: "http1: invalid response: invalid field name"}
	errRespFieldValue    = &serval.StatusError{Status: 502, Msg: "http1: invalid response: invalid field value"}
	errRespObsFold       = &serval.StatusError{Status: 502, Msg: "http1: invalid response: obsolete line folding"}
	errRespHeadTooLarge  = &serval.StatusError{Status: 502, Msg: "http1: invalid response: head too large"}
	errRespTooManyFields = &serval.StatusError{Status: 502, Msg: "http1: invalid response: too many header fields"}
	errRespLength        = &serval.StatusError{Status: 502, Msg: "http1: invalid response: invalid content-length"}
	errRespLengthAndTE   = &serval.StatusError{Status: 502, Msg: "http1: invalid response: content-length with transfer-encoding"}
	errRespTE            = &serval.StatusError{Status: 502, Msg: "http1: invalid response: transfer-encoding must end in chunked once"}
	errRespTEVersion     = &serval.StatusError{Status: 502, Msg: "http1: invalid response: transfer-encoding in HTTP/1.0"}
	errRespTENotSupp     = &serval.StatusError{Status: 502, Msg: "http1: invalid response: transfer coding not implemented"}
	errRespInvalid       = &serval.StatusError{Status: 502, Msg: "http1: invalid response"}
)

// responseError maps a head error shared with the request parser to its
// 502 counterpart; ErrIncomplete and nil pass through.
func responseError(err error) error {
	switch err {
	case nil, ErrIncomplete, ErrBadStatusLine:
		return err
	case ErrBareLF:
		return errRespBareLF
	case ErrBareCR:
		return errRespBareCR
	case ErrBadFieldName:
		return errRespFieldName
	case ErrBadFieldValue:
		return errRespFieldValue
	case ErrObsFold:
		return errRespObsFold
	case ErrHeadTooLarge:
		return errRespHeadTooLarge
	case ErrTooManyFields:
		return errRespTooManyFields
	case ErrBadLength:
		return errRespLength
	case ErrLengthAndTE:
		return errRespLengthAndTE
	case ErrBadTE:
		return errRespTE
	case ErrTEVersion:
		return errRespTEVersion
	case ErrTENotSupported:
		return errRespTENotSupp
	}
	return errRespInvalid
}

// ResponseLimit reports whether err refused an upstream's message for
// exceeding a limit of ours (head size, field count, trailer size, chunk
// extension length) rather than for a defect: the upstream may have
// answered validly, only more than this side takes. A proxy should not
// count it against the upstream's health.
func ResponseLimit(err error) bool {
	for _, e := range [...]error{errRespHeadTooLarge, errRespTooManyFields, ErrTrailerTooLarge, ErrChunkExtTooLong} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
