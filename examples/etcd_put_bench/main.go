// etcd_put_bench: the durable replicated PUT load of `make bench-compare`,
// for etcd, with etcd's own Go client (gRPC), built offline from Debian's
// golang-etcd-server-dev sources (examples/bench_compare.sh builds it).
//
// Like kv_bench: -c clients, each sending one put at a time and waiting
// for its reply, -n puts in all, values of -d bytes, keys drawn uniformly
// from -r. The clients share -conns gRPC connections (etcd's benchmark
// tool does the same: one HTTP/2 connection carries many streams).
// Prints one line like kv_bench's: ops/s and p50/p99/p99.9/max.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client URLs (host:port)")
	clients := flag.Int("c", 16, "concurrent clients, one put in flight each")
	conns := flag.Int("conns", 1, "gRPC connections shared by the clients")
	total := flag.Int("n", 100000, "puts in all")
	size := flag.Int("d", 100, "value size in bytes")
	keys := flag.Int("r", 100000, "key space: keys drawn uniformly from this many")
	brief := flag.Bool("brief", false, "print only \"ops/s p50 p99 p99.9\" (latencies in us), for scripts")
	flag.Parse()

	eps := strings.Split(*endpoints, ",")
	var cs []*clientv3.Client
	for i := 0; i < *conns; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd_put_bench:", err)
			os.Exit(2)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	value := strings.Repeat("v", *size)
	per := *total / *clients
	lat := make([][]time.Duration, *clients)
	var errs int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(i) + 1))
			c := cs[i%len(cs)]
			l := make([]time.Duration, 0, per)
			for j := 0; j < per; j++ {
				key := fmt.Sprintf("key:%012d", rng.Intn(*keys))
				t := time.Now()
				_, err := c.Put(context.Background(), key, value)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					continue
				}
				l = append(l, time.Since(t))
			}
			lat[i] = l
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	if len(all) == 0 {
		fmt.Fprintln(os.Stderr, "etcd_put_bench: no put succeeded")
		os.Exit(1)
	}
	at := func(p float64) time.Duration { return all[int(float64(len(all)-1)*p)] }
	q := func(p float64) string { return show(at(p)) }
	ops := float64(len(all)) / elapsed.Seconds()
	if *brief {
		fmt.Printf("%.0f %d %d %d\n", ops, at(0.5).Microseconds(), at(0.99).Microseconds(), at(0.999).Microseconds())
		return
	}
	fmt.Printf("etcd put c=%d conns=%d n=%d d=%d: %.0f ops/s  p50 %s  p99 %s  p99.9 %s  max %s  errors %d\n",
		*clients, *conns, len(all), *size, ops,
		q(0.5), q(0.99), q(0.999), show(all[len(all)-1]), errs)
}

func show(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%dus", d.Microseconds())
	}
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}
