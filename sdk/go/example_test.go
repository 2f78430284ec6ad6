package polyfn_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/polyfn/polyfn/api/baetyl"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

// sayhi is a polyfn function. A main package serves it with
//
//	func main() { polyfn.Start(sayhi) }
func sayhi(ctx context.Context, event polyfn.Event) (any, error) {
	var in struct {
		Name string `json:"name"`
	}
	if err := event.Decode(&in); err != nil {
		return nil, err
	}
	if in.Name == "" {
		return nil, errors.New("no name")
	}
	polyfn.Logger(ctx).Info("greeting", "name", in.Name)
	return map[string]string{"greeting": "hi " + in.Name}, nil
}

// A handler is a plain function: NewEvent and NewContext build its
// arguments for a test.
func Example() {
	ctx := polyfn.NewContext(context.Background(), &polyfn.Context{FunctionName: "sayhi", Trigger: polyfn.TriggerInvoke})
	result, err := sayhi(ctx, polyfn.NewEvent([]byte(`{"name":"ada"}`)))
	fmt.Println(result, err)

	// An empty payload is {}: Decode leaves the struct at its zero value.
	_, err = sayhi(ctx, polyfn.NewEvent(nil))
	fmt.Println(err)
	// Output:
	// map[greeting:hi ada] <nil>
	// no name
}

// Serve runs a worker in call mode (the Baetyl protocol) until its context
// is cancelled; here a Baetyl client invokes it over a unix socket.
func ExampleServe() {
	dir, err := os.MkdirTemp("", "polyfn-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "worker.sock")
	config := filepath.Join(dir, "service.yml")
	// The host writes this file; server.address stands in for BAETYL_SERVICE_INSTANCE_ADDRESS.
	yml := "functions:\n  - name: sayhi\nserver:\n  address: unix:" + sock + "\n"
	if err := os.WriteFile(config, []byte(yml), 0o600); err != nil {
		panic(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- polyfn.Serve(ctx, sayhi, []string{"-c", config}) }()

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	callCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := baetyl.NewFunctionClient(conn).Call(callCtx, &baetyl.FunctionMessage{
		FunctionName: "sayhi", FunctionInvokeID: "1", Payload: []byte(`{"name":"ada"}`),
	}, grpc.WaitForReady(true))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(reply.Payload))

	stop() // what SIGTERM does under Start: drain, then return
	fmt.Println(<-served)
	// Output:
	// {"greeting":"hi ada"}
	// <nil>
}
