// Who is logged in, and what the role allows (the API enforces it; the UI only hides what would fail).

const ROLES = ["viewer", "analyst", "admin"];
export const session = { user: null };

export function can(role) {
  const u = session.user;
  return Boolean(u) && ROLES.indexOf(u.role) >= ROLES.indexOf(role);
}
