package host

// AppStreams reports whether the app's worker serves HTTP itself (the
// HttpUri capability, e.g. Node.js app.setup({enableHttpStream: true})): the
// request and response bodies of its HTTP functions then stream through the
// host, bounded by http.max_stream_body instead of http.max_body. It is
// known once an instance of the app has started.
func (h *Host) AppStreams(app string) bool {
	for _, a := range h.apps {
		if a.cfg.Name == app {
			return a.streaming.Load()
		}
	}
	return false
}

// MaxStreamBody is the largest request body of a streaming app function.
func (h *Host) MaxStreamBody() int64 { return int64(h.cfg.HTTP.MaxStreamBody) }
