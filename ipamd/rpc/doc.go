// Package rpc is the gRPC protocol between the CNI plugin and ipamd,
// wire-compatible with the AWS VPC CNI's package rpc. rpc.pb.go and
// rpc_grpc.pb.go are generated from rpc.proto by `make proto`.
package rpc
