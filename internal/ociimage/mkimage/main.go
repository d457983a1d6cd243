// Command mkimage builds kfm's container image (see package ociimage):
//
//	mkimage -binary bin/kfm-static -layout build/image [-ca-bundle FILE]
//	        [-push host/repo:tag] [-kustomization manifests/kubernetes/kustomization.yaml]
//
// It prints the image digest. With -push it pushes the image (credentials
// from the Docker config, plain HTTP for a loopback registry); with
// -kustomization it writes the pushed name and digest into the
// kustomization's images entry for ghcr.io/kfm-project/kfm, so that the
// DaemonSet runs exactly that image.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/kfm-project/kfm/internal/ociimage"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	binary := flag.String("binary", "", "static kfm binary")
	dir := flag.String("layout", "build/image", "OCI image layout to write")
	ca := flag.String("ca-bundle", "", "CA bundle to install at "+ociimage.CABundlePath)
	version := flag.String("version", "dev", "image version label and layout ref name")
	push := flag.String("push", "", "push to this reference (host/repo:tag)")
	kust := flag.String("kustomization", "", "kustomization.yaml whose image digest to set (with -push)")
	flag.Parse()
	if *binary == "" {
		return fmt.Errorf("-binary is required")
	}
	opts := ociimage.Options{Version: *version, Arch: runtime.GOARCH}
	var err error
	if opts.Binary, err = os.ReadFile(*binary); err != nil {
		return err
	}
	if *ca != "" {
		if opts.CABundle, err = os.ReadFile(*ca); err != nil {
			return err
		}
	}
	opts.Created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", s)
		}
		opts.Created = time.Unix(n, 0).UTC()
	}
	img, err := ociimage.Build(opts)
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if err := ociimage.WriteLayout(*dir, img, *version); err != nil {
		return err
	}
	fmt.Printf("%s %s\n", *dir, d)
	if *push == "" {
		return nil
	}
	pushed, err := ociimage.Push(context.Background(), *dir, *version, *push)
	if err != nil {
		return err
	}
	fmt.Println(pushed)
	if *kust != "" {
		return ociimage.SetKustomizationImage(*kust, pushed)
	}
	return nil
}
