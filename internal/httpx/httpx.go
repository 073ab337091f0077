// Package httpx holds the HTTP client piece every SDK user of fakeec2
// needs.
package httpx

import (
	"bytes"
	"io"
	"net/http"
)

// BodyCopyClient hands the transport a private copy of the request body.
// aws-sdk-go-v2 closes its request body as soon as Do returns; against a
// server that answers before the transport's write loop has read the
// body's EOF (any loopback server), that close makes the transport drop
// the connection while the response is still being read. Real EC2's
// latency hides the race. A nil Client is http.DefaultClient.
type BodyCopyClient struct{ Client *http.Client }

// Do implements the SDK's HTTPClient.
func (b BodyCopyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		data, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(data))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	}
	c := b.Client
	if c == nil {
		c = http.DefaultClient
	}
	return c.Do(req)
}
