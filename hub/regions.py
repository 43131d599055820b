"""The region tree in memory: where each site sits (province → city → county → project), and who may see it."""

from __future__ import annotations

from dataclasses import dataclass

from hub.config import HubUser, Project, Region

UNASSIGNED = "unassigned"  # sites that report but are in no project of the tree: seen at the root only


@dataclass(frozen=True, slots=True)
class Placement:
    site: str
    project: Project | None
    path: tuple[Region, ...]  # from the root down to the county; the root only for an unassigned site


class RegionTree:
    def __init__(self, root: Region) -> None:
        self.root = root
        self._by_code: dict[str, Region] = {}
        self._parent: dict[str, str | None] = {}
        self._sites: dict[str, Placement] = {}
        self._under: dict[str, list[str]] = {}  # region code -> its sites, in the tree's order
        self._walk(root, None, ())

    def _walk(self, r: Region, parent: str | None, path: tuple[Region, ...]) -> list[str]:
        self._by_code[r.code] = r
        self._parent[r.code] = parent
        here = (*path, r)
        sites: list[str] = []
        for c in r.children:
            sites += self._walk(c, r.code, here)
        for p in r.projects:
            for s in p.sites:
                self._sites[s] = Placement(s, p, here)
                sites.append(s)
        self._under[r.code] = sites
        return sites

    # ---- lookups --------------------------------------------------------------------------------------------

    def region(self, code: str) -> Region | None:
        return self._by_code.get(code)

    def placement(self, site: str) -> Placement:
        return self._sites.get(site) or Placement(site, None, (self.root,))

    def sites_under(self, code: str) -> list[str]:
        return list(self._under.get(code, ()))

    def known_sites(self) -> set[str]:
        return set(self._sites)

    def within(self, code: str, ancestor: str) -> bool:
        at: str | None = code
        while at is not None:
            if at == ancestor:
                return True
            at = self._parent.get(at)
        return False

    # ---- scopes ---------------------------------------------------------------------------------------------

    def scope_root(self, user: HubUser) -> Region | None:
        """The region a user looks down from: theirs, or for a contractor group's user the whole tree (filtered to
        the group's projects by `may_see`)."""
        return self.region(user.region) if user.region is not None else self.root

    def may_see(self, user: HubUser, site: str) -> bool:
        pl = self.placement(site)
        if user.company is not None:
            return pl.project is not None and pl.project.company == user.company
        assert user.region is not None
        if pl.project is None:  # a site nobody placed yet: the administrators of the whole region sort it out
            return user.region == self.root.code
        return any(r.code == user.region for r in pl.path)

    def visible(self, user: HubUser, reporting: set[str], region: str | None = None) -> list[str]:
        """The sites a user may see under `region` (default: their whole scope), the tree's order first, then the
        unassigned ones that report (at the root only)."""
        start = region or (user.region if user.region is not None else self.root.code)
        out = [s for s in self.sites_under(start) if self.may_see(user, s)]
        if start == self.root.code:
            out += sorted(s for s in reporting - self.known_sites() if self.may_see(user, s))
        return out
