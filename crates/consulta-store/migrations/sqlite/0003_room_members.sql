-- Who is in which room, as far as Consulta knows: written by the gate when it allows an invite (so the
-- next decision sees it at once) and from membership events in transactions. Lets the gate decide
-- without asking the homeserver. `at` orders writes: an older event never overwrites a newer state.
-- Keep in step with ../postgres/0003_room_members.sql.
CREATE TABLE room_members (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
