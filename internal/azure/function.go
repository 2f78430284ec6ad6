package azure

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// Binding directions, normalised lower-case.
const (
	DirectionIn    = "in"
	DirectionOut   = "out"
	DirectionInOut = "inout"
)

// ReturnBinding is the name of the binding that stands for the function's
// return value.
const ReturnBinding = "$return"

// Function is one function of an Azure Functions app, as indexed by the
// worker or read from function.json.
type Function struct {
	// ID is the function id used on the stream (function_id).
	ID         string
	Name       string
	Directory  string
	ScriptFile string
	EntryPoint string
	Language   string
	// Bindings in the order they were declared.
	Bindings []Binding
	// Raw is the raw JSON of each binding, in the order of Bindings.
	Raw []string
	// Properties are the function's metadata properties (worker indexing).
	Properties map[string]string
	// HTTP is set when the function has an httpTrigger binding.
	HTTP *HTTPTrigger
}

// Binding is one binding of a function.
type Binding struct {
	Name string
	Type string
	// Direction is "in", "out" or "inout".
	Direction string
	// DataType is "", "string", "binary" or "stream".
	DataType string
	// Raw is the binding's JSON object.
	Raw map[string]any
}

// HTTPTrigger describes a function's httpTrigger binding and its HTTP
// output.
type HTTPTrigger struct {
	// BindingName is the trigger binding's name ("req",
	// "httpTrigger624a61988c", ...): the input's name on an invocation.
	BindingName string
	// Route is the binding's route template without leading or trailing
	// slashes, or the function's name when the binding has none.
	Route string
	// Methods are upper-case; empty means any method.
	Methods []string
	// AuthLevel is lower-case; "function" when the binding has none.
	AuthLevel string
	// OutputBinding is "$return" or the name of the http output binding
	// (e.g. "res"); "$return" when the function declares no http output.
	OutputBinding string
}

// IsTrigger reports whether the binding is a trigger: an input binding whose
// type ends in "Trigger" (any case), as the official host decides.
func (b Binding) IsTrigger() bool {
	return b.Direction == DirectionIn && strings.HasSuffix(strings.ToLower(b.Type), "trigger")
}

// Trigger returns the function's trigger binding, or nil.
func (f *Function) Trigger() *Binding {
	for i := range f.Bindings {
		if f.Bindings[i].IsTrigger() {
			return &f.Bindings[i]
		}
	}
	return nil
}

// FromWorkerMetadata builds a Function from the metadata a worker sent in
// its FunctionMetadataResponse (worker indexing). The bindings come from
// raw_bindings (JSON objects); when there are none, from the bindings map
// (ordered by name, with the trigger first). A missing function_id gets a
// new random id.
func FromWorkerMetadata(md *rpc.RpcFunctionMetadata) (*Function, error) {
	if md == nil {
		return nil, errors.New("function metadata is missing")
	}
	if md.Name == "" {
		return nil, fmt.Errorf("function metadata (function_id %q) has no name", md.FunctionId)
	}
	fn := &Function{
		ID:         md.FunctionId,
		Name:       md.Name,
		Directory:  md.Directory,
		ScriptFile: md.ScriptFile,
		EntryPoint: md.EntryPoint,
		Language:   md.Language,
	}
	if fn.ID == "" {
		fn.ID = StableID(md.GetName())
	}
	if len(md.Properties) > 0 {
		fn.Properties = maps.Clone(md.Properties)
	}
	var raws []json.RawMessage
	if len(md.RawBindings) > 0 {
		for _, s := range md.RawBindings {
			raws = append(raws, json.RawMessage(s))
		}
	} else {
		raws = rawFromBindingInfo(md.Bindings)
	}
	if err := fn.setBindings(raws); err != nil {
		return nil, fmt.Errorf("function %q: %w", fn.Name, err)
	}
	return fn, nil
}

// rawFromBindingInfo turns the bindings map of RpcFunctionMetadata into raw
// binding JSON: name, type, direction, dataType and the binding's string
// properties.
func rawFromBindingInfo(m map[string]*rpc.BindingInfo) []json.RawMessage {
	names := slices.Sorted(maps.Keys(m))
	// The trigger first, then the rest by name.
	slices.SortStableFunc(names, func(a, b string) int {
		ta, tb := isTriggerInfo(m[a]), isTriggerInfo(m[b])
		switch {
		case ta && !tb:
			return -1
		case tb && !ta:
			return 1
		}
		return 0
	})
	var out []json.RawMessage
	for _, name := range names {
		bi := m[name]
		obj := map[string]any{}
		for k, v := range bi.GetProperties() {
			obj[k] = v
		}
		obj["name"] = name
		obj["type"] = bi.GetType()
		obj["direction"] = directionName(bi.GetDirection())
		if dt := dataTypeName(bi.GetDataType()); dt != "" {
			obj["dataType"] = dt
		}
		b, _ := json.Marshal(obj)
		out = append(out, b)
	}
	return out
}

func isTriggerInfo(bi *rpc.BindingInfo) bool {
	return bi.GetDirection() == rpc.BindingInfo_in && strings.HasSuffix(strings.ToLower(bi.GetType()), "trigger")
}

func directionName(d rpc.BindingInfo_Direction) string {
	switch d {
	case rpc.BindingInfo_out:
		return DirectionOut
	case rpc.BindingInfo_inout:
		return DirectionInOut
	}
	return DirectionIn
}

func dataTypeName(d rpc.BindingInfo_DataType) string {
	switch d {
	case rpc.BindingInfo_string:
		return "string"
	case rpc.BindingInfo_binary:
		return "binary"
	case rpc.BindingInfo_stream:
		return "stream"
	}
	return ""
}

// setBindings parses raw binding JSON objects into fn.Bindings and fn.Raw,
// checks them (a name and type each, unique names, exactly one trigger) and
// derives fn.HTTP.
func (fn *Function) setBindings(raws []json.RawMessage) error {
	fn.Bindings = nil
	fn.Raw = nil
	seen := map[string]bool{}
	for i, raw := range raws {
		b, err := parseBinding(raw)
		if err != nil {
			return fmt.Errorf("binding %s: %w", describeBinding(i, raw, b.Name), err)
		}
		key := strings.ToLower(b.Name)
		if seen[key] {
			return fmt.Errorf("binding %s: another binding has the same name", describeBinding(i, raw, b.Name))
		}
		seen[key] = true
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			compact.Reset()
			compact.Write(raw)
		}
		fn.Bindings = append(fn.Bindings, b)
		fn.Raw = append(fn.Raw, compact.String())
	}
	var triggers []string
	for _, b := range fn.Bindings {
		if b.IsTrigger() {
			triggers = append(triggers, b.Name)
		}
	}
	switch len(triggers) {
	case 0:
		return errors.New("no trigger binding: a function needs exactly one input binding whose type ends in \"Trigger\"")
	case 1:
	default:
		return fmt.Errorf("several trigger bindings (%s): a function can have only one", strings.Join(quoteAll(triggers), ", "))
	}
	ht, err := httpTriggerOf(fn)
	if err != nil {
		return err
	}
	fn.HTTP = ht
	return nil
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

// describeBinding names a binding for an error message: its name when it
// has one, else its position and the start of its JSON.
func describeBinding(i int, raw []byte, name string) string {
	if name != "" {
		return fmt.Sprintf("%q", name)
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return fmt.Sprintf("#%d (%s)", i+1, s)
}

// parseBinding parses one binding JSON object. Keys are matched without
// regard to case, as the official host does. On error the returned Binding
// still carries the name when one was found.
func parseBinding(raw []byte) (Binding, error) {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return Binding{}, fmt.Errorf("not a JSON object: %v", err)
	}
	if dec.More() {
		return Binding{}, errors.New("not a JSON object: text after the object")
	}
	if obj == nil {
		return Binding{}, errors.New("not a JSON object: null")
	}
	b := Binding{Raw: obj}
	var err error
	if b.Name, err = stringField(obj, "name"); err != nil {
		return b, err
	}
	if b.Name == "" {
		return b, errors.New("missing \"name\"")
	}
	if b.Type, err = stringField(obj, "type"); err != nil {
		return b, err
	}
	if b.Type == "" {
		return b, errors.New("missing \"type\"")
	}
	dir, err := stringField(obj, "direction")
	if err != nil {
		return b, err
	}
	switch d := strings.ToLower(strings.TrimSpace(dir)); d {
	case "":
		b.Direction = DirectionIn
	case DirectionIn, DirectionOut, DirectionInOut:
		b.Direction = d
	default:
		return b, fmt.Errorf("invalid direction %q: want in, out or inout", dir)
	}
	dt, err := stringField(obj, "dataType")
	if err != nil {
		return b, err
	}
	switch d := strings.ToLower(strings.TrimSpace(dt)); d {
	case "", "undefined":
	case "string", "binary", "stream":
		b.DataType = d
	default:
		return b, fmt.Errorf("invalid dataType %q: want string, binary or stream", dt)
	}
	return b, nil
}

// lookup finds key in obj, first exactly, then without regard to case.
func lookup(obj map[string]any, key string) (any, bool) {
	if v, ok := obj[key]; ok {
		return v, true
	}
	for k, v := range obj {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// stringField returns obj[key] as a string; "" when absent or null.
func stringField(obj map[string]any, key string) (string, error) {
	v, ok := lookup(obj, key)
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%q must be a string, not %s", key, jsonKind(v))
	}
	return s, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a string"
}

// httpTriggerOf derives the HTTPTrigger of fn, or nil when its trigger is
// not an httpTrigger.
func httpTriggerOf(fn *Function) (*HTTPTrigger, error) {
	t := fn.Trigger()
	if t == nil || !strings.EqualFold(t.Type, "httpTrigger") {
		return nil, nil
	}
	h := &HTTPTrigger{BindingName: t.Name}
	route, err := stringField(t.Raw, "route")
	if err != nil {
		return nil, fmt.Errorf("binding %q: %w", t.Name, err)
	}
	h.Route = strings.Trim(strings.TrimSpace(route), "/")
	if h.Route == "" {
		h.Route = fn.Name
	}
	if v, ok := lookup(t.Raw, "methods"); ok && v != nil {
		var list []string
		switch m := v.(type) {
		case []any:
			for _, e := range m {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("binding %q: \"methods\" must be a list of strings", t.Name)
				}
				list = append(list, s)
			}
		case string:
			list = strings.Split(m, ",")
		default:
			return nil, fmt.Errorf("binding %q: \"methods\" must be a list of strings", t.Name)
		}
		for _, s := range list {
			s = strings.ToUpper(strings.TrimSpace(s))
			if s != "" && !slices.Contains(h.Methods, s) {
				h.Methods = append(h.Methods, s)
			}
		}
	}
	auth, err := stringField(t.Raw, "authLevel")
	if err != nil {
		return nil, fmt.Errorf("binding %q: %w", t.Name, err)
	}
	h.AuthLevel = strings.ToLower(strings.TrimSpace(auth))
	if h.AuthLevel == "" {
		h.AuthLevel = "function"
	}
	h.OutputBinding = ReturnBinding
	for _, b := range fn.Bindings {
		if strings.EqualFold(b.Type, "http") && (b.Direction == DirectionOut || b.Direction == DirectionInOut) {
			h.OutputBinding = b.Name
			break
		}
	}
	return h, nil
}

// LoadRequest builds the FunctionLoadRequest for fn. The metadata carries
// name, directory, script_file, entry_point, language, raw_bindings,
// function_id, the bindings map (binding name → type, direction,
// data_type; "$return" included like any other binding) and properties:
// fn.Properties, then the keys of echoProperties that fn.Properties does
// not have (the official host also keeps the first value of a key).
func (fn *Function) LoadRequest(echoProperties map[string]string) *rpc.FunctionLoadRequest {
	md := &rpc.RpcFunctionMetadata{
		Name:        fn.Name,
		Directory:   fn.Directory,
		ScriptFile:  fn.ScriptFile,
		EntryPoint:  fn.EntryPoint,
		Language:    fn.Language,
		RawBindings: slices.Clone(fn.Raw),
		FunctionId:  fn.ID,
		Bindings:    make(map[string]*rpc.BindingInfo, len(fn.Bindings)),
	}
	for _, b := range fn.Bindings {
		md.Bindings[b.Name] = &rpc.BindingInfo{
			Type:      b.Type,
			Direction: directionValue(b.Direction),
			DataType:  dataTypeValue(b.DataType),
		}
	}
	if len(fn.Properties)+len(echoProperties) > 0 {
		md.Properties = maps.Clone(fn.Properties)
		if md.Properties == nil {
			md.Properties = map[string]string{}
		}
		for k, v := range echoProperties {
			if _, ok := md.Properties[k]; !ok {
				md.Properties[k] = v
			}
		}
	}
	return &rpc.FunctionLoadRequest{FunctionId: fn.ID, Metadata: md}
}

func directionValue(d string) rpc.BindingInfo_Direction {
	switch d {
	case DirectionOut:
		return rpc.BindingInfo_out
	case DirectionInOut:
		return rpc.BindingInfo_inout
	}
	return rpc.BindingInfo_in
}

func dataTypeValue(d string) rpc.BindingInfo_DataType {
	switch d {
	case "string":
		return rpc.BindingInfo_string
	case "binary":
		return rpc.BindingInfo_binary
	case "stream":
		return rpc.BindingInfo_stream
	}
	return rpc.BindingInfo_undefined
}

// NewID returns a new random function id (a version 4 UUID).
// StableID derives a UUID-formed id from key, the same in every process, so
// that every worker of an app knows a function by the same id (the host
// sends an invocation to any of them).
func StableID(key string) string {
	sum := sha1.Sum([]byte("polyfn function " + key))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("azure: crypto/rand failed: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
