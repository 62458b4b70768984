package e2e

import "time"

// What each alert says, as the component's annotations render it.

func at(ts time.Time) string { return time.Unix(ts.Unix(), 0).UTC().String() }

func disconnected(cluster string) firing {
	return firing{"RelayClusterDisconnected", map[string]string{"severity": "critical", "cluster": cluster}, map[string]string{
		"summary":     "Cluster " + cluster + " is registered but not connected",
		"description": "KubernetesCluster " + cluster + " exists, but no relay-server replica has held both its push and its pull stream for 5 minutes.",
		"runbook_url": runbookBase + "relayclusterdisconnected",
	}}
}

func refusalSpike(reason string) firing {
	return firing{"RelayRefusalSpike", map[string]string{"severity": "warning", "reason": reason}, map[string]string{
		"summary":     "relay-server is refusing many client certificates or signing requests (" + reason + ")",
		"description": "relay-server refused more than 30 client certificates or Bootstrap and Renew calls in 5 minutes with reason " + reason + ", for 5 minutes.",
		"runbook_url": runbookBase + "relayrefusalspike",
	}}
}

func serverCertExpiring(cert string, notAfter time.Time) firing {
	return firing{"RelayCertificateExpiring", map[string]string{"severity": "warning", "certificate": cert}, map[string]string{
		"summary":     "relay-server's " + cert + " certificate has less than a third of its lifetime left",
		"description": "relay-server's " + cert + " certificate expires at " + at(notAfter) + ", with less than a third of its lifetime left. Renew it.",
		"runbook_url": runbookBase + "relaycertificateexpiring",
	}}
}

func clusterCertExpiring(cluster string, notAfter time.Time) firing {
	return firing{"RelayCertificateExpiring", map[string]string{"severity": "critical", "certificate": "client", "source": "relay-server", "cluster": cluster}, map[string]string{
		"summary":     "The client certificate of cluster " + cluster + " expires in under 7 days",
		"description": "The newest client certificate of cluster " + cluster + " that relay-server knows expires at " + at(notAfter) + ". Its agent cannot connect once it has expired.",
		"runbook_url": runbookBase + "relaycertificateexpiring",
	}}
}

// agentLabels are an agent alert's labels: the target's less instance and
// pod, and the rule's own.
func agentLabels(tg scrapeTarget, rule map[string]string) map[string]string {
	l := tg.aggregated()
	for k, v := range rule {
		l[k] = v
	}
	return l
}

func agentCertExpiring(tg scrapeTarget, cluster string, notAfter time.Time) firing {
	return firing{"RelayCertificateExpiring", agentLabels(tg, map[string]string{"severity": "critical", "certificate": "client", "source": "relay-agent"}), map[string]string{
		"summary":     "relay-agent's client certificate in cluster " + cluster + " expires in under 7 days",
		"description": "The client certificate that relay-agent in namespace gloo-mesh of cluster " + cluster + " connects with expires at " + at(notAfter) + ". The agent cannot connect once it has expired.",
		"runbook_url": runbookBase + "relaycertificateexpiring",
	}}
}

func agentCertThirdLeft(tg scrapeTarget, cluster string, notAfter time.Time) firing {
	return firing{"RelayCertificateExpiring", agentLabels(tg, map[string]string{"severity": "warning", "certificate": "client", "source": "relay-agent"}), map[string]string{
		"summary":     "relay-agent's client certificate in cluster " + cluster + " has less than a third of its lifetime left",
		"description": "The client certificate that relay-agent in namespace gloo-mesh of cluster " + cluster + " connects with expires at " + at(notAfter) + ", with less than a third of its lifetime left and its renewal time passed.",
		"runbook_url": runbookBase + "relaycertificateexpiring",
	}}
}

func rotationsFailing(tg scrapeTarget, cluster string) firing {
	return firing{"RelayRotationOverdue", agentLabels(tg, map[string]string{"severity": "warning", "reason": "rotations-failing"}), map[string]string{
		"summary":     "relay-agent's certificate rotations in cluster " + cluster + " are failing",
		"description": "relay-agent in namespace gloo-mesh of cluster " + cluster + " failed to obtain a client certificate in the last 30 minutes and succeeded in none.",
		"runbook_url": runbookBase + "relayrotationoverdue",
	}}
}

func renewalOverdue(tg scrapeTarget, cluster string, renewal time.Time) firing {
	return firing{"RelayRotationOverdue", agentLabels(tg, map[string]string{"severity": "warning", "reason": "renewal-overdue"}), map[string]string{
		"summary":     "relay-agent's client certificate renewal in cluster " + cluster + " is over an hour overdue",
		"description": "relay-agent in namespace gloo-mesh of cluster " + cluster + " was due to renew its client certificate at " + at(renewal) + " and still connects with it.",
		"runbook_url": runbookBase + "relayrotationoverdue",
	}}
}
