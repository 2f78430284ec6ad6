package azure

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	rpc "github.com/polyfn/polyfn/api/azure"
	"google.golang.org/protobuf/proto"
)

// Raw bindings as the official Node.js v4 programming model sends them for
// app.http('hello', {methods: ['GET', 'POST'], authLevel: 'anonymous', handler}).
var nodeV4Raw = []string{
	`{"authLevel":"anonymous","methods":["GET","POST"],"type":"httpTrigger","name":"httpTrigger624a61988c","direction":"in"}`,
	`{"type":"http","name":"$return","direction":"out"}`,
}

// Raw bindings as the Python v2 decorator model sends them for
// @app.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS).
var pythonV2Raw = []string{
	`{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["get"], "authLevel": "ANONYMOUS", "route": "hello/{name}"}`,
	`{"direction": "OUT", "type": "http", "name": "$return"}`,
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[45][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestFromWorkerMetadata(t *testing.T) {
	tests := []struct {
		name       string
		md         *rpc.RpcFunctionMetadata
		wantID     string // "" = a new random id
		wantHTTP   HTTPTrigger
		wantBinds  []Binding // Raw not compared
		wantProps  map[string]string
		wantScript string
	}{
		{
			name: "node v4",
			md: &rpc.RpcFunctionMetadata{
				Name: "hello", Directory: "/app", ScriptFile: "/app/src/functions/hello.js",
				Language: "node", FunctionId: "0b0b5b5e-6a8d-4e6e-9d3f-1f2e3d4c5b6a",
				RawBindings: nodeV4Raw,
			},
			wantID: "0b0b5b5e-6a8d-4e6e-9d3f-1f2e3d4c5b6a",
			wantHTTP: HTTPTrigger{BindingName: "httpTrigger624a61988c", Route: "hello",
				Methods: []string{"GET", "POST"}, AuthLevel: "anonymous", OutputBinding: "$return"},
			wantBinds: []Binding{
				{Name: "httpTrigger624a61988c", Type: "httpTrigger", Direction: "in"},
				{Name: "$return", Type: "http", Direction: "out"},
			},
			wantScript: "/app/src/functions/hello.js",
		},
		{
			name: "python v2 decorator",
			md: &rpc.RpcFunctionMetadata{
				Name: "hello", Directory: "/app", ScriptFile: "function_app.py",
				Language: "python", Properties: map[string]string{"worker_indexed": "True"},
				RawBindings: pythonV2Raw,
			},
			wantHTTP: HTTPTrigger{BindingName: "req", Route: "hello/{name}",
				Methods: []string{"GET"}, AuthLevel: "anonymous", OutputBinding: "$return"},
			wantBinds: []Binding{
				{Name: "req", Type: "httpTrigger", Direction: "in"},
				{Name: "$return", Type: "http", Direction: "out"},
			},
			wantProps:  map[string]string{"worker_indexed": "True"},
			wantScript: "function_app.py",
		},
		{
			name: "bindings map when raw_bindings is empty",
			md: &rpc.RpcFunctionMetadata{
				Name: "legacy", FunctionId: "legacy-id",
				Bindings: map[string]*rpc.BindingInfo{
					"res": {Type: "http", Direction: rpc.BindingInfo_out},
					"trigger": {Type: "httpTrigger", Direction: rpc.BindingInfo_in, DataType: rpc.BindingInfo_string,
						Properties: map[string]string{"route": "legacy/{id}"}},
				},
			},
			wantID: "legacy-id",
			wantHTTP: HTTPTrigger{BindingName: "trigger", Route: "legacy/{id}", AuthLevel: "function",
				OutputBinding: "res"},
			wantBinds: []Binding{ // the trigger first, then by name
				{Name: "trigger", Type: "httpTrigger", Direction: "in", DataType: "string"},
				{Name: "res", Type: "http", Direction: "out"},
			},
		},
		{
			name: "inout direction, upper-case and comma methods",
			md: &rpc.RpcFunctionMetadata{
				Name: "Mixed", FunctionId: "m",
				RawBindings: []string{
					`{"type":"HttpTrigger","direction":"In","name":"req","methods":"get, Post","route":"/mixed/"}`,
					`{"type":"http","direction":"INOUT","name":"res","dataType":"Binary"}`,
				},
			},
			wantID: "m",
			wantHTTP: HTTPTrigger{BindingName: "req", Route: "mixed", Methods: []string{"GET", "POST"},
				AuthLevel: "function", OutputBinding: "res"},
			wantBinds: []Binding{
				{Name: "req", Type: "HttpTrigger", Direction: "in"},
				{Name: "res", Type: "http", Direction: "inout", DataType: "binary"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, err := FromWorkerMetadata(tt.md)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantID != "" && fn.ID != tt.wantID {
				t.Errorf("ID = %q, want %q", fn.ID, tt.wantID)
			}
			if tt.wantID == "" && !uuidRe.MatchString(fn.ID) {
				t.Errorf("ID = %q, want a UUID", fn.ID)
			}
			if again, _ := FromWorkerMetadata(tt.md); again.ID != fn.ID {
				t.Errorf("ID %q then %q: every worker must get the same id for a function", fn.ID, again.ID)
			}
			if fn.Name != tt.md.Name || fn.ScriptFile != tt.wantScript || fn.Language != tt.md.Language {
				t.Errorf("name/script/language = %q %q %q", fn.Name, fn.ScriptFile, fn.Language)
			}
			if fn.HTTP == nil {
				t.Fatal("HTTP = nil")
			}
			if got := *fn.HTTP; !equalHTTP(got, tt.wantHTTP) {
				t.Errorf("HTTP = %+v, want %+v", got, tt.wantHTTP)
			}
			if len(fn.Bindings) != len(tt.wantBinds) || len(fn.Raw) != len(fn.Bindings) {
				t.Fatalf("bindings = %+v, raw = %q", fn.Bindings, fn.Raw)
			}
			for i, b := range fn.Bindings {
				w := tt.wantBinds[i]
				if b.Name != w.Name || b.Type != w.Type || b.Direction != w.Direction || b.DataType != w.DataType {
					t.Errorf("binding %d = %+v, want %+v", i, b, w)
				}
				if b.Raw == nil || !json.Valid([]byte(fn.Raw[i])) {
					t.Errorf("binding %d: raw %q / %v", i, fn.Raw[i], b.Raw)
				}
			}
			if len(tt.wantProps) != len(fn.Properties) {
				t.Errorf("properties = %v, want %v", fn.Properties, tt.wantProps)
			}
			for k, v := range tt.wantProps {
				if fn.Properties[k] != v {
					t.Errorf("properties = %v, want %v", fn.Properties, tt.wantProps)
				}
			}
		})
	}
}

func equalHTTP(a, b HTTPTrigger) bool {
	return a.BindingName == b.BindingName && a.Route == b.Route && a.AuthLevel == b.AuthLevel &&
		a.OutputBinding == b.OutputBinding && strings.Join(a.Methods, ",") == strings.Join(b.Methods, ",")
}

func TestFromWorkerMetadataErrors(t *testing.T) {
	tests := []struct {
		name string
		md   *rpc.RpcFunctionMetadata
		want []string // substrings of the error
	}{
		{"nil", nil, []string{"missing"}},
		{"no name", &rpc.RpcFunctionMetadata{FunctionId: "x", RawBindings: nodeV4Raw}, []string{"no name", `"x"`}},
		{"bad json", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"httpTrigger",`}},
			[]string{`function "f"`, "binding #1", "not a JSON object"}},
		{"not an object", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`[1]`}},
			[]string{`function "f"`, "binding #1"}},
		{"no type", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"name":"req","direction":"in"}`}},
			[]string{`function "f"`, `binding "req"`, `missing "type"`}},
		{"no name field", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"httpTrigger"}`}},
			[]string{`function "f"`, "binding #1", `missing "name"`}},
		{"bad direction", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"httpTrigger","name":"req","direction":"sideways"}`}},
			[]string{`function "f"`, `binding "req"`, `invalid direction "sideways"`}},
		{"bad dataType", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"httpTrigger","name":"req","dataType":"blob"}`}},
			[]string{`binding "req"`, `invalid dataType "blob"`}},
		{"methods not strings", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"httpTrigger","name":"req","methods":[1]}`}},
			[]string{`function "f"`, `binding "req"`, "methods"}},
		{"route not a string", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"httpTrigger","name":"req","route":7}`}},
			[]string{`binding "req"`, `"route" must be a string`}},
		{"duplicate names", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{
			`{"type":"httpTrigger","name":"req","direction":"in"}`, `{"type":"http","name":"REQ","direction":"out"}`}},
			[]string{`function "f"`, `binding "REQ"`, "same name"}},
		{"no trigger", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{`{"type":"http","name":"$return","direction":"out"}`}},
			[]string{`function "f"`, "no trigger"}},
		{"two triggers", &rpc.RpcFunctionMetadata{Name: "f", RawBindings: []string{
			`{"type":"httpTrigger","name":"a"}`, `{"type":"timerTrigger","name":"b"}`}},
			[]string{`function "f"`, `"a", "b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromWorkerMetadata(tt.md)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNonHTTPFunction(t *testing.T) {
	fn, err := FromWorkerMetadata(&rpc.RpcFunctionMetadata{Name: "tick", RawBindings: []string{
		`{"type":"timerTrigger","direction":"in","name":"myTimer","schedule":"0 */5 * * * *"}`}})
	if err != nil {
		t.Fatal(err)
	}
	if fn.HTTP != nil {
		t.Errorf("HTTP = %+v, want nil", fn.HTTP)
	}
	if tr := fn.Trigger(); tr == nil || tr.Name != "myTimer" {
		t.Errorf("Trigger() = %+v", tr)
	}
}

func TestLoadRequest(t *testing.T) {
	tests := []struct {
		name      string
		md        *rpc.RpcFunctionMetadata
		echo      map[string]string
		wantBinds map[string]*rpc.BindingInfo
		wantProps map[string]string
	}{
		{
			name: "node v4",
			md:   &rpc.RpcFunctionMetadata{Name: "hello", Directory: "/app", ScriptFile: "/app/index.js", Language: "node", FunctionId: "id1", RawBindings: nodeV4Raw},
			wantBinds: map[string]*rpc.BindingInfo{
				"httpTrigger624a61988c": {Type: "httpTrigger", Direction: rpc.BindingInfo_in},
				"$return":               {Type: "http", Direction: rpc.BindingInfo_out},
			},
		},
		{
			name: "python v2, properties merged",
			md: &rpc.RpcFunctionMetadata{Name: "hello", Directory: "/app", ScriptFile: "function_app.py", EntryPoint: "hello",
				Language: "python", FunctionId: "id2", RawBindings: pythonV2Raw, Properties: map[string]string{"worker_indexed": "True"}},
			echo: map[string]string{"worker_indexed": "False", "polyfn": "1"},
			wantBinds: map[string]*rpc.BindingInfo{
				"req":     {Type: "httpTrigger", Direction: rpc.BindingInfo_in},
				"$return": {Type: "http", Direction: rpc.BindingInfo_out},
			},
			wantProps: map[string]string{"worker_indexed": "True", "polyfn": "1"},
		},
		{
			name: "data types and inout",
			md: &rpc.RpcFunctionMetadata{Name: "f", FunctionId: "id3", RawBindings: []string{
				`{"type":"httpTrigger","direction":"in","name":"req","dataType":"string"}`,
				`{"type":"http","direction":"inout","name":"res","dataType":"stream"}`,
				`{"type":"blob","direction":"in","name":"pic","dataType":"binary","path":"c/{id}"}`,
			}},
			echo: map[string]string{"polyfn": "1"},
			wantBinds: map[string]*rpc.BindingInfo{
				"req": {Type: "httpTrigger", Direction: rpc.BindingInfo_in, DataType: rpc.BindingInfo_string},
				"res": {Type: "http", Direction: rpc.BindingInfo_inout, DataType: rpc.BindingInfo_stream},
				"pic": {Type: "blob", Direction: rpc.BindingInfo_in, DataType: rpc.BindingInfo_binary},
			},
			wantProps: map[string]string{"polyfn": "1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, err := FromWorkerMetadata(tt.md)
			if err != nil {
				t.Fatal(err)
			}
			lr := fn.LoadRequest(tt.echo)
			want := &rpc.FunctionLoadRequest{
				FunctionId: tt.md.FunctionId,
				Metadata: &rpc.RpcFunctionMetadata{
					Name: tt.md.Name, Directory: tt.md.Directory, ScriptFile: tt.md.ScriptFile,
					EntryPoint: tt.md.EntryPoint, Language: tt.md.Language, FunctionId: tt.md.FunctionId,
					RawBindings: fn.Raw, Bindings: tt.wantBinds, Properties: tt.wantProps,
				},
			}
			if !proto.Equal(lr, want) {
				t.Errorf("LoadRequest =\n%v\nwant\n%v", lr, want)
			}
			if _, err := proto.Marshal(lr); err != nil {
				t.Errorf("marshal: %v", err)
			}
			// The raw bindings are the worker's, compacted.
			for i, raw := range lr.Metadata.RawBindings {
				var a, b any
				_ = json.Unmarshal([]byte(raw), &a)
				_ = json.Unmarshal([]byte(tt.md.RawBindings[i]), &b)
				if ja, jb := mustJSON(a), mustJSON(b); ja != jb {
					t.Errorf("raw binding %d = %s, want %s", i, ja, jb)
				}
			}
		})
	}
}

func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	if !uuidRe.MatchString(a) || a == b {
		t.Errorf("NewID = %q, %q", a, b)
	}
}
