package translate

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/vnode-project/vnode/eci/model"
)

// FuzzPod feeds arbitrary pods through the translation: it must return a
// group or an error, never panic.
//
//	go test -run '^$' -fuzz FuzzPod -fuzztime 60s ./provider/translate
func FuzzPod(f *testing.F) {
	seed, _ := json.Marshal(fullPod())
	f.Add(seed)
	f.Add([]byte(`{"spec":{"containers":[{"name":"a","ports":[{"containerPort":1,"hostPort":2}]}]}}`))
	f.Add([]byte(`{"metadata":{"annotations":{"k8s.aliyun.com/eci-use-specs":"-,2-,ecs."}},"spec":{"volumes":[{"name":"p","projected":{"sources":[{}]}}]}}`))
	f.Add([]byte(`{"spec":{"containers":[{"name":"a","env":[{"name":"X","value":"$(","valueFrom":{"resourceFieldRef":{"resource":"limits.cpu","divisor":"0"}}}]}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var pod corev1.Pod
		if json.Unmarshal(data, &pod) != nil {
			return
		}
		g, err := Pod(&pod, testNode, Sources{Objects: objects(), Tokens: mintAll(&pod)})
		if err == nil && g == nil {
			t.Fatal("nil group without an error")
		}
		_ = PodStatus(&pod, &model.Instance{Status: StatusRunning})
	})
}
