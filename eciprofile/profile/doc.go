// Package profile is eci-profile's pure core: it parses the two forms of
// selectors (the ConfigMap kube-system/eci-profile and the Selector custom
// resource selectors.eci.aliyun.com/v1), decides which of them match a pod,
// and mutates the pod add-only so that the scheduler places it as the
// winning policy says. It talks to nothing; eciprofile/webhook serves it.
package profile
