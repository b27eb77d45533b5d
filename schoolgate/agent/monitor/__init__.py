"""The network monitor: what is on the school's network, seen from the gateway.

Passive only: the monitor reads ARP and DHCP on the LAN interfaces (which devices are there,
with their addresses and the names they ask DHCP for) and never sends a packet. It runs in a
thread of its own, outside the DNS event loop, and hands what it finds to the activity log as
``device`` events, with an alert for a device the school has not approved. Capturing needs
root or the ``CAP_NET_RAW`` capability and ``tcpdump`` (to build the kernel's packet filter);
without them the monitor says so once and DNS carries on.
"""
