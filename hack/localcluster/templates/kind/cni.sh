#!/bin/sh
# One node's share of the pod network, every 5 s (idempotent): the CNI config for this node's podCIDR, a route to
# every other node's podCIDR via that node, and SNAT for traffic that leaves the pod network (so the host's
# answers come back through the node instead of following the host's default route).
set -u
conf=/etc/cni/net.d/10-daemonpool.conflist
while :; do
  if kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' > /tmp/nodes; then
    while read -r name cidr ip; do
      [ -n "$cidr" ] || continue
      if [ "$name" = "$NODE_NAME" ]; then
        want=$(printf '{"cniVersion":"1.0.0","name":"daemonpool","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}' "$cidr")
        if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then printf '%s' "$want" > "$conf.tmp" && mv "$conf.tmp" "$conf" && echo "cni: $cidr"; fi
      else
        ip route replace "$cidr" via "$ip"
      fi
    done < /tmp/nodes
    iptables -t nat -C POSTROUTING -s "$POD_SUBNET" ! -d "$POD_SUBNET" -j MASQUERADE 2>/dev/null \
      || iptables -t nat -A POSTROUTING -s "$POD_SUBNET" ! -d "$POD_SUBNET" -j MASQUERADE
  fi
  sleep 5
done
