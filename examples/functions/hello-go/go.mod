module hello-go

go 1.26.0

require github.com/polyfn/polyfn/sdk/go v0.0.0

require (
	github.com/polyfn/polyfn/api v0.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260928230214-8a89bd6388cc // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// polyfn's Go SDK is not published: it comes with polyfn. These lines point
// at the checkout's copy, for go test and editors; polyfn builds the function
// with its own copy whatever they say (an image holding this directory alone
// builds it too).
replace (
	github.com/polyfn/polyfn/api => ../../../api
	github.com/polyfn/polyfn/sdk/go => ../../../sdk/go
)
