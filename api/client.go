package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// ErrNotFound is returned by Client calls answered 404: for a heartbeat, the
// control plane does not know the node and it must re-register.
var ErrNotFound = errors.New("not found")

// ErrUnauthorized is wrapped by Client calls answered 401: the token is
// missing or wrong.
var ErrUnauthorized = errors.New("unauthorized")

// Client calls the control plane's node routes. It is used by the node agent
// and the llorch CLI.
type Client struct {
	BaseURL string
	// Alternates are more control planes sharing one fleet (orchestratord
	// --registry etcd). A call whose connection fails is tried on the next
	// one, and later calls stay where a call last got through: the node
	// stays registered, as every replica knows it.
	Alternates []string
	Token      string
	HTTP       *http.Client

	current atomic.Int32 // index into BaseURL + Alternates
}

// NewClientFor returns a Client of a comma-separated list of control-plane
// URLs: the first is BaseURL, the others Alternates.
func NewClientFor(urls, token string, hc *http.Client) *Client {
	c := &Client{Token: token, HTTP: hc}
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSuffix(strings.TrimSpace(u), "/"); u == "" {
			continue
		}
		if c.BaseURL == "" {
			c.BaseURL = u
		} else {
			c.Alternates = append(c.Alternates, u)
		}
	}
	return c
}

// Current is the control plane calls go to now.
func (c *Client) Current() string {
	if i := int(c.current.Load()); i > 0 && i <= len(c.Alternates) {
		return c.Alternates[i-1]
	}
	return c.BaseURL
}

// Register registers a node.
func (c *Client) Register(ctx context.Context, req RegisterRequest) error {
	return c.do(ctx, http.MethodPost, "/v2/nodes/register", req, nil)
}

// Heartbeat sends one heartbeat.
func (c *Client) Heartbeat(ctx context.Context, nodeID string, hb HeartbeatRequest) (HeartbeatResponse, error) {
	var resp HeartbeatResponse
	err := c.do(ctx, http.MethodPost, "/v2/nodes/"+url.PathEscape(nodeID)+"/heartbeat", hb, &resp)
	return resp, err
}

// Deregister removes a node.
func (c *Client) Deregister(ctx context.Context, nodeID string) error {
	return c.do(ctx, http.MethodDelete, "/v2/nodes/"+url.PathEscape(nodeID), nil, nil)
}

// Nodes lists the fleet; all adds offline nodes.
func (c *Client) Nodes(ctx context.Context, all bool) (NodeList, error) {
	var out NodeList
	path := "/v2/nodes"
	if all {
		path += "?status=all"
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // let the connection be reused
		return nil
	}
	if err := Decode(resp.Body, 64<<20, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// send makes one call with the token, and turns a non-2xx answer into an
// error carrying the envelope's code and message (wrapping ErrNotFound for
// 404). On success the caller owns the response body.
func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		payload = b
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	n := 1 + len(c.Alternates)
	first := int(c.current.Load())
	var resp *http.Response
	for try := 0; ; try++ {
		at := (first + try) % n
		base := c.BaseURL
		if at > 0 {
			base = c.Alternates[at-1]
		}
		var rd io.Reader
		if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err = hc.Do(req)
		if err != nil {
			// No answer: another control plane may give one, unless the
			// caller gave up.
			if ctx.Err() == nil && try+1 < n {
				continue
			}
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if at != first {
			c.current.Store(int32(at))
		}
		break
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	var e Error
	msg := resp.Status
	if data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); json.Unmarshal(data, &e) == nil && e.Message != "" {
		msg = fmt.Sprintf("%s: %s: %s", resp.Status, e.Code, e.Message)
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, fmt.Errorf("%s %s: %w (%s)", method, path, ErrNotFound, msg)
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("%s %s: %w (%s)", method, path, ErrUnauthorized, msg)
	}
	return nil, fmt.Errorf("%s %s: %s", method, path, msg)
}

// SubmitTask posts a v2 task.
func (c *Client) SubmitTask(ctx context.Context, t TaskRequest) (TaskAccepted, error) {
	var out TaskAccepted
	err := c.do(ctx, http.MethodPost, "/v2/tasks", t, &out)
	return out, err
}

// Explain asks how placement would rank the fleet for a model.
func (c *Client) Explain(ctx context.Context, model string) (Explanation, error) {
	var out Explanation
	err := c.do(ctx, http.MethodGet, "/v2/placement/explain?model="+url.QueryEscape(model), nil, &out)
	return out, err
}

// TaskEvents opens a task's event stream; the caller reads and closes it.
func (c *Client) TaskEvents(ctx context.Context, taskID string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v2/tasks/"+url.PathEscape(taskID)+"/events", nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
