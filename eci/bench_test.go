package eci

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"

	"github.com/vnode-project/vnode/eci/emulator"
	"github.com/vnode-project/vnode/eci/emulator/emulatortest"
)

// BenchmarkDescribe measures DescribeContainerGroups (one page of 20 of
// 200 groups, tag-filtered) through the client layer and through a bare
// SDK client, against the emulator on loopback, in parallel.
//
//	go test -run '^$' -bench Describe -benchtime 3s ./provider/eci
func BenchmarkDescribe(b *testing.B) {
	emu, ep := emulatortest.StartForTest(b, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim"})
	_ = emu
	c := newClientB(b, ep)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, _, err := c.CreateContainerGroup(ctx, group(fmt.Sprintf("b-%d", i), fmt.Sprintf("tok-%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	page := flat{"Limit": "20", "Tag.1.Key": "vnode.io/node", "Tag.1.Value": "n1"}
	b.Run("client-layer", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := c.call(ctx, "DescribeContainerGroups", page, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
	b.Run("raw-sdk", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			cl, err := sdk.NewClientWithOptions("cn-hangzhou", sdk.NewConfig(), credentials.NewAccessKeyCredential(id, secret))
			if err != nil {
				b.Fatal(err)
			}
			cl.Domain = ep
			for pb.Next() {
				req := requests.NewCommonRequest()
				req.Method, req.Scheme, req.Product, req.Version, req.ApiName = "POST", "http", "Eci", Version, "DescribeContainerGroups"
				for k, v := range page {
					req.QueryParams[k] = v
				}
				if _, err := cl.ProcessCommonRequest(req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}

func newClientB(b *testing.B, ep string) *Client {
	b.Helper()
	c, err := New(Config{RegionID: "cn-hangzhou", Endpoint: "http://" + ep, AccessKeyID: id, AccessKeySecret: secret,
		RateLimits: map[string]int{"DescribeContainerGroups": -1, "DescribeContainerGroupStatus": -1, "CreateContainerGroup": -1}})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkStatusPageDecode decodes one answer of
// DescribeContainerGroupStatus (200 groups, as the emulator gives them) as
// ListStatuses does: the client's side of every sync's status list.
//
//	go test -run '^$' -bench StatusPageDecode -benchmem ./eci/
func BenchmarkStatusPageDecode(b *testing.B) {
	_, ep := emulatortest.StartForTest(b, emulator.Config{Credentials: map[string]string{id: secret}, Runtime: "sim",
		Quota: emulator.Quota{Off: true}})
	c := newClientB(b, ep)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, _, err := c.CreateContainerGroup(ctx, group(fmt.Sprintf("s-%d", i), fmt.Sprintf("tok-s-%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	body, err := c.once(ctx, "DescribeContainerGroupStatus", flat{"Limit": "200"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var page statusPage
		if err := json.Unmarshal(body, &page); err != nil || len(page.Data) != 200 {
			b.Fatalf("%d statuses, %v", len(page.Data), err)
		}
	}
	b.ReportMetric(float64(len(body)), "answer-bytes")
}
