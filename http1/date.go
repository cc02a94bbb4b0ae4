package http1

import "time"

// DateCache keeps a Date field value (RFC 9110 §6.6.1), formatted at
// most once a second. Not safe for concurrent use: one per connection
// or session.
type DateCache struct {
	sec int64
	buf [len(dateLayout)]byte
}

// dateLayout is the IMF-fixdate of RFC 9110 §5.6.7 (net/http.TimeFormat).
const dateLayout = "Mon, 02 Jan 2006 15:04:05 GMT"

// Get returns now as an IMF-fixdate. The slice is the cache's: valid
// until the next Get.
func (d *DateCache) Get(now time.Time) []byte {
	if s := now.Unix(); s != d.sec {
		now.UTC().AppendFormat(d.buf[:0], dateLayout)
		d.sec = s
	}
	return d.buf[:]
}
