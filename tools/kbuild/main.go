// Command kbuild builds what vpclab's Kubernetes mode runs (make
// kubernetes): the pinned Kubernetes multi-call binary, agnhost,
// containerd, CoreDNS, the pause program and the images, into vpclab's
// cache; pieces already built are kept.
//
//	go run ./tools/kbuild [-repo DIR]
//	go run ./tools/kbuild -print-dir   (where the build is, and nothing else)
//	go run ./tools/kbuild -upstream-cni   (the real VPC CNI's build: its app directory)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/vpclab/vpclab/lab"
	"github.com/vpclab/vpclab/lab/k8s"
)

func main() {
	repo := flag.String("repo", ".", "the vpclab source tree (tools/kube, tools/pause)")
	printDir := flag.Bool("print-dir", false, "print the build's directory and exit (make vagrant-stage copies it)")
	upstreamCNI := flag.Bool("upstream-cni", false, "build the real VPC CNI "+lab.UpstreamVersion+" (or find it in the cache) and print its app directory")
	flag.Parse()
	if *printDir {
		fmt.Println(k8s.Dir())
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *upstreamCNI {
		b, err := lab.BuildCNI(ctx, lab.CNI{Kind: lab.CNIUpstream, Version: lab.UpstreamVersion}, func(f string, a ...any) { fmt.Fprintf(os.Stderr, "  "+f+"\n", a...) })
		if err != nil {
			fmt.Fprintf(os.Stderr, "kbuild: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(b.AppDir)
		return
	}
	err := k8s.Build(ctx, *repo, func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) })
	if err != nil {
		fmt.Fprintf(os.Stderr, "kbuild: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("Kubernetes mode build complete:", k8s.Dir())
}
